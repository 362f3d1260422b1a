//! Qredo's Lingua Franca RPC at `/services` end to end through `tryst serve`, driven by a
//! client that follows the Qredo SDK's crypto (`QredoRendezvousCrypto.m`,
//! `QredoConversationCrypto.m`, `QredoConversation.m`): the tag KDF, AES-256-CTR responder
//! info with the IV prepended, HMAC-SHA256 authentication codes, X25519 and the HKDF
//! conversation keys, Ed25519 ownership signatures. Every refusal is checked as the exact
//! failure result; none is a 5xx.

use crate::relay::Relay;
use aes::cipher::{KeyIvInit as _, StreamCipher as _};
use ed25519_dalek::SigningKey;
use hkdf::Hkdf;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{SystemTime, UNIX_EPOCH};
use tryst_relay::qredo::lf::{
    self, ErrorInfo, Interchange, Limits, Outcome, PROTOCOL_VERSION, Record, Request, Value,
};
use tryst_relay::qredo::ownership::{Op, sign};
use tryst_relay::tag::kdf;

pub(crate) const APP: &str = "com.example.chat";
pub(crate) const APP_SECRET_HEX: &str = "5ec2e7a55ec2e7a5";

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn hkdf32(ikm: &[u8], salt: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(&[], &mut out)
        .unwrap();
    out
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// The SDK's `encryptBulk`: AES-256-CTR, a random 16-byte IV prepended.
fn encrypt(key: &[u8; 32], plain: &[u8]) -> Vec<u8> {
    let iv: [u8; 16] = rand::random();
    let mut out = plain.to_vec();
    Aes256Ctr::new(key.into(), &iv.into()).apply_keystream(&mut out);
    [iv.to_vec(), out].concat()
}

fn decrypt(key: &[u8; 32], data: &[u8]) -> Vec<u8> {
    let (iv, ct) = data.split_at(16);
    let mut out = ct.to_vec();
    Aes256Ctr::new(key.into(), iv.into()).apply_keystream(&mut out);
    out
}

fn decode_value(bytes: &[u8]) -> Value {
    Value::decode(&lf::sexp::parse(bytes, &Limits::default()).unwrap()).unwrap()
}

/// One SDK client: app credentials and a transport ([`Http`] unless said otherwise).
struct Client<T = Http> {
    transport: T,
    secret: Vec<u8>,
}

/// How a client's requests reach `/services`, as the SDK's two transports do: one POST
/// each ([`Http`], `QredoHttpTransport`) or one WebSocket for all ([`WsTransport`],
/// `QredoWebSocketTransport`).
trait Transport {
    /// Sends `req`; the result carrying its correlation id.
    fn exchange(&self, req: &Request) -> lf::Response;
    /// Starts the multi-response operation `req`: `None` once the relay counts the
    /// subscription live, or the result that refused it.
    fn subscribe(&self, req: &Request) -> Option<lf::Response>;
    /// The next result pushed for the subscription `req` started.
    fn pushed(&self, req: &Request) -> lf::Response;
}

/// One POST per request to the plain listener at `.0`.
struct Http(SocketAddr);

impl Transport for Http {
    fn exchange(&self, req: &Request) -> lf::Response {
        let (status, body) = post_raw(self.0, &req.encode());
        assert_eq!(status, 200);
        lf::decode_response(&body, &Limits::default()).expect("a Lingua Franca result")
    }

    fn subscribe(&self, req: &Request) -> Option<lf::Response> {
        Some(self.exchange(req))
    }

    fn pushed(&self, req: &Request) -> lf::Response {
        unreachable!("HTTP started no subscription: {req:?}")
    }
}

/// One WebSocket (plain or TLS) for every request. Results are matched to requests by
/// correlation id; those read while waiting for another (pushes, mostly) are kept for
/// whoever asks for them. `metrics` is the plain listener, where `/metrics` tells when a
/// subscription is live.
struct WsTransport<S: Read + Write> {
    ws: RefCell<Ws<S>>,
    early: RefCell<Vec<lf::Response>>,
    metrics: SocketAddr,
}

impl<S: Read + Write> WsTransport<S> {
    fn new(ws: Ws<S>, metrics: SocketAddr) -> Self {
        Self {
            ws: RefCell::new(ws),
            early: RefCell::new(Vec::new()),
            metrics,
        }
    }

    /// The first result for `correlation` not yet taken: one read earlier, else the
    /// next one read with it (keeping the others read meanwhile).
    fn next_for(&self, correlation: &[u8]) -> lf::Response {
        let mut early = self.early.borrow_mut();
        if let Some(i) = early
            .iter()
            .position(|r| r.header.correlation == correlation)
        {
            return early.remove(i);
        }
        let mut ws = self.ws.borrow_mut();
        loop {
            let resp = ws_recv(&mut ws);
            if resp.header.correlation == correlation {
                return resp;
            }
            early.push(resp);
        }
    }
}

impl<S: Read + Write> Transport for WsTransport<S> {
    fn exchange(&self, req: &Request) -> lf::Response {
        ws_send(&mut self.ws.borrow_mut(), req);
        self.next_for(&req.header.correlation)
    }

    fn subscribe(&self, req: &Request) -> Option<lf::Response> {
        let live = metric(self.metrics, SUBSCRIPTIONS);
        ws_send(&mut self.ws.borrow_mut(), req);
        // Requests on a socket run concurrently: only the counter says that the
        // subscription, not a later request, went first.
        await_metric(self.metrics, SUBSCRIPTIONS, live + 1);
        None
    }

    fn pushed(&self, req: &Request) -> lf::Response {
        self.next_for(&req.header.correlation)
    }
}

/// The live subscriptions on `/metrics`.
const SUBSCRIPTIONS: &str = "tryst_qredo_subscriptions";

pub(crate) fn post_raw(addr: SocketAddr, body: &[u8]) -> (u16, Vec<u8>) {
    post_with(addr, "POST", body)
}

fn post_with(addr: SocketAddr, method: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "{method} /services HTTP/1.1\r\nHost: relay\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The relay may answer (and close) before reading an oversized body.
    let _ = s.write_all(body);
    read_http(&mut s)
}

fn read_http(s: &mut impl Read) -> (u16, Vec<u8>) {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&raw)));
    let status = std::str::from_utf8(&raw[9..12]).unwrap().parse().unwrap();
    (status, raw[end + 4..].to_vec())
}

pub(crate) fn request(service: &str, op: &str, secret: &[u8], args: Vec<Value>) -> Request {
    Request {
        header: Interchange {
            protocol: PROTOCOL_VERSION,
            release: PROTOCOL_VERSION,
            return_channel: b"client-1".to_vec(),
            correlation: rand::random::<[u8; 16]>().to_vec(),
            service: service.into(),
            operation: op.into(),
        },
        app_id: APP.into(),
        app_secret: secret.to_vec(),
        args,
    }
}

impl Client {
    /// Over HTTP to the plain listener at `addr`.
    fn new(addr: SocketAddr) -> Self {
        Self::over(Http(addr))
    }
}

impl<T: Transport> Client<T> {
    fn over(transport: T) -> Self {
        Self {
            transport,
            secret: hex::decode(APP_SECRET_HEX).unwrap(),
        }
    }

    /// Sends `req`; the outcome, after checking the envelope echoes the request's.
    fn send(&self, req: &Request) -> Outcome {
        let resp = self.transport.exchange(req);
        assert_echoes(&resp, req);
        resp.outcome
    }

    fn call(&self, service: &str, op: &str, args: Vec<Value>) -> Outcome {
        self.send(&request(service, op, &self.secret, args))
    }

    fn ok(&self, service: &str, op: &str, args: Vec<Value>) -> Value {
        match self.call(service, op, args) {
            Outcome::Success(mut v) if v.len() == 1 => v.remove(0),
            other => panic!("{service}.{op}: {other:?}"),
        }
    }

    /// Starts the subscription `req`: `true` where the transport pushes (the
    /// WebSocket); where it cannot (HTTP), checks the exact refusal and says `false`.
    fn subscribe(&self, req: &Request) -> bool {
        let Some(refused) = self.transport.subscribe(req) else {
            return true;
        };
        assert_echoes(&refused, req);
        assert_eq!(
            refused.outcome,
            failed(
                1015,
                "needs_websocket",
                "multi-response operations need the WebSocket transport"
            )
        );
        false
    }

    /// The value of the next result pushed for the subscription `req` started.
    fn pushed(&self, req: &Request) -> Value {
        let resp = self.transport.pushed(req);
        assert_echoes(&resp, req);
        match resp.outcome {
            Outcome::Success(mut v) if v.len() == 1 => v.remove(0),
            other => panic!("pushed for {}: {other:?}", req.header.operation),
        }
    }
}

/// `resp`'s envelope echoes `req`'s (correlation id, return channel, service, operation).
fn assert_echoes(resp: &lf::Response, req: &Request) {
    assert_eq!(resp.header.correlation, req.header.correlation);
    assert_eq!(resp.header.return_channel, req.header.return_channel);
    assert_eq!(resp.header.service, req.header.service);
    assert_eq!(resp.header.operation, req.header.operation);
}

/// The failure `code`/`name` exactly as the relay encodes it.
pub(crate) fn failed(code: i32, name: &str, message: &str) -> Outcome {
    Outcome::Failure(vec![ErrorInfo {
        code,
        message: message.into(),
        debug: vec![("tryst".into(), name.into())],
    }])
}

fn record_name(v: &Value) -> &str {
    &v.as_record().unwrap().name
}

fn field<'a>(v: &'a Value, name: &str) -> &'a Value {
    v.as_record().unwrap().field(name).unwrap()
}

/// The publisher's side of a rendezvous (`QredoRendezvousCrypto.m`).
struct Publisher {
    hashed: [u8; 32],
    owner: SigningKey,
    auth_key: [u8; 32],
    dh: x25519_dalek::StaticSecret,
}

/// Keys both sides derive from the tag.
fn tag_keys(tag: &str) -> ([u8; 32], [u8; 32], [u8; 32]) {
    let master = kdf::master_key(APP, tag);
    let hashed = kdf::hashed_tag(APP, tag).0;
    (
        hashed,
        hkdf32(&master, b"QoR0rwQOu3PMCieK"),
        hkdf32(&master, b"FZHoqke4BfkIOfkH"),
    )
}

fn creation_info(tag: &str, single: bool, duration: Option<i32>) -> (Publisher, Value) {
    let (hashed, enc_key, auth_key) = tag_keys(tag);
    let owner = SigningKey::from_bytes(&hashed);
    let dh = x25519_dalek::StaticSecret::from(rand::random::<[u8; 32]>());
    let responder_info = Value::Record(Record::new(
        "RendezvousResponderInfo",
        vec![
            ("conversationType", Value::Str("com.qredo.chat".into())),
            (
                "requesterPublicKey",
                Value::Bytes(x25519_dalek::PublicKey::from(&dh).as_bytes().to_vec()),
            ),
            ("transCap", Value::Set(vec![])),
        ],
    ));
    let sealed = Value::Bytes(encrypt(&enc_key, &responder_info.encode())).encode();
    let code = hmac(&auth_key, &[&hashed, &sealed]);
    let info = Value::Record(Record::new(
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
                        ("authenticationCode", Value::Bytes(code)),
                        (
                            "authenticationType",
                            Value::Record(Record::unit("RendezvousAnonymous")),
                        ),
                        ("value", Value::Bytes(sealed)),
                    ],
                )),
            ),
            ("hashedTag", Value::Quid(hashed)),
            (
                "ownershipPublicKey",
                Value::Bytes(owner.verifying_key().as_bytes().to_vec()),
            ),
            (
                "responseCountLimit",
                Value::Record(Record::unit(if single {
                    "RendezvousSingleResponse"
                } else {
                    "RendezvousUnlimitedResponses"
                })),
            ),
        ],
    ));
    (
        Publisher {
            hashed,
            owner,
            auth_key,
            dh,
        },
        info,
    )
}

impl Publisher {
    fn sig(&self, op: Op, data: &[u8]) -> Value {
        sign(&self.owner, op, data, &rand::random::<[u8; 16]>(), now_ms())
    }

    fn get_responses_args(&self, after: i64) -> Vec<Value> {
        let mut data = Value::Quid(self.hashed).encode();
        Value::Int64(after).encode_into(&mut data);
        vec![
            Value::Quid(self.hashed),
            Value::Int64(after),
            self.sig(Op::List, &data),
        ]
    }
}

/// A responder: its X25519 pair and the `RendezvousResponse` it sends.
fn response_for(tag: &str) -> (x25519_dalek::StaticSecret, Value) {
    let (hashed, _, auth_key) = tag_keys(tag);
    let dh = x25519_dalek::StaticSecret::from(rand::random::<[u8; 32]>());
    let public = x25519_dalek::PublicKey::from(&dh).as_bytes().to_vec();
    let code = hmac(&auth_key, &[&hashed, &public]);
    let response = Value::Record(Record::new(
        "RendezvousResponse",
        vec![
            ("hashedTag", Value::Quid(hashed)),
            ("responderAuthenticationCode", Value::Bytes(code)),
            ("responderPublicKey", Value::Bytes(public)),
        ],
    ));
    (dh, response)
}

/// One direction of a conversation: the queue's signing key (its public key is the
/// queue id) and the bulk and authentication keys.
struct Queue {
    key: SigningKey,
    enc: [u8; 32],
    auth: [u8; 32],
}

/// `QredoConversation.m`: (requester inbound, responder inbound) from the DH secret.
/// A WebSocket client of the relay at `addr` subscribed to `queue`, and its
/// subscription request (pushes echo it).
fn ws_subscriber(addr: SocketAddr, queue: &Queue) -> (Client<WsTransport<TcpStream>>, Request) {
    let subscriber = Client::over(WsTransport::new(ws_connect(addr), addr));
    let subscription = request(
        "Conversations",
        "subscribe",
        &subscriber.secret,
        queue.subscribe_args(),
    );
    assert!(subscriber.subscribe(&subscription));
    (subscriber, subscription)
}

fn conversation(shared: &[u8; 32]) -> (Queue, Queue) {
    let master = hkdf32(shared, b"");
    let queue = |queue_salt: &[u8], enc_salt: &[u8], auth_salt: &[u8]| Queue {
        key: SigningKey::from_bytes(&hkdf32(&master, queue_salt)),
        enc: hkdf32(&master, enc_salt),
        auth: hkdf32(&master, auth_salt),
    };
    (
        queue(
            b"eeK3hieyengahp3A",
            b"iJ8LLVtLlt2tzlXz",
            b"7KySh0dMToM9IyzR",
        ),
        queue(
            b"Wo6ahjata4tae5ij",
            b"BbSe15geLqnWW5Vb",
            b"8i6DD1mbFMv4oG9I",
        ),
    )
}

impl Queue {
    fn id(&self) -> Value {
        Value::Quid(self.key.verifying_key().to_bytes())
    }

    fn publish_args(&self, text: &str) -> Vec<Value> {
        let message = Value::Record(Record::new(
            "ConversationMessage",
            vec![("body", Value::Bytes(text.as_bytes().to_vec()))],
        ));
        let encrypted = Value::Bytes(encrypt(&self.enc, &message.encode())).encode();
        let item = Value::Record(Record::new(
            "EncryptedConversationItem",
            vec![
                ("authCode", Value::Bytes(hmac(&self.auth, &[&encrypted]))),
                ("encryptedMessage", Value::Bytes(encrypted)),
            ],
        ));
        let sig = sign(
            &self.key,
            Op::Create,
            &item.encode(),
            &rand::random::<[u8; 16]>(),
            now_ms(),
        );
        vec![self.id(), item, sig]
    }

    fn query_args(&self, after: Option<&[u8]>, fetch: i32) -> Vec<Value> {
        let after = Value::Set(
            after
                .map(|a| Value::Bytes(a.to_vec()))
                .into_iter()
                .collect(),
        );
        let fetch = Value::Set(vec![Value::Int32(fetch)]);
        let mut data = after.encode();
        fetch.encode_into(&mut data);
        let sig = sign(
            &self.key,
            Op::List,
            &data,
            &rand::random::<[u8; 16]>(),
            now_ms(),
        );
        vec![self.id(), after, fetch, sig]
    }

    fn ack_args(&self, up_to: &[u8]) -> Vec<Value> {
        let up_to = Value::Bytes(up_to.to_vec());
        let sig = sign(
            &self.key,
            Op::Delete,
            &up_to.encode(),
            &rand::random::<[u8; 16]>(),
            now_ms(),
        );
        vec![self.id(), up_to, sig]
    }

    /// `Conversations.subscribe` for this queue (`OperationList` over nothing).
    fn subscribe_args(&self) -> Vec<Value> {
        let sig = sign(
            &self.key,
            Op::List,
            &[],
            &rand::random::<[u8; 16]>(),
            now_ms(),
        );
        vec![self.id(), sig]
    }

    /// An `EncryptedConversationItem`'s text, after checking its authentication code.
    fn open(&self, item: &Value) -> String {
        let encrypted = field(item, "encryptedMessage").as_bytes().unwrap();
        assert_eq!(
            field(item, "authCode").as_bytes().unwrap(),
            hmac(&self.auth, &[encrypted])
        );
        let sealed = decode_value(encrypted);
        let message = decode_value(&decrypt(&self.enc, sealed.as_bytes().unwrap()));
        String::from_utf8(field(&message, "body").as_bytes().unwrap().to_vec()).unwrap()
    }

    /// Reads the items after `after`: (texts, sequence values, current), each item
    /// checked and decrypted ([`Queue::open`]).
    fn read<T: Transport>(
        &self,
        client: &Client<T>,
        after: Option<&[u8]>,
    ) -> (Vec<String>, Vec<Vec<u8>>, bool) {
        let result = client.ok("Conversations", "queryItems", self.query_args(after, 100));
        assert_eq!(record_name(&result), "ConversationQueryItemsResult");
        let Value::Seq(items) = field(&result, "items") else {
            panic!("items")
        };
        let texts = items.iter().map(|e| self.open(field(e, "item"))).collect();
        let seqs = items
            .iter()
            .map(|e| field(e, "sequenceValue").as_bytes().unwrap().to_vec())
            .collect();
        let current = field(&result, "current") == &Value::Bool(true);
        (texts, seqs, current)
    }
}

/// A relay that knows the test app ([`APP`]), with `extra` flags.
fn apps_relay(extra: &[&str]) -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("apps.toml");
    std::fs::write(&apps, format!("[apps]\n\"{APP}\" = \"{APP_SECRET_HEX}\"\n")).unwrap();
    let relay = Relay::http(&[&["--qredo-apps", apps.to_str().unwrap()], extra].concat());
    // The file is read at start; the relay owns its settings from then on.
    drop(dir);
    relay
}

/// The whole SDK flow through `client`'s transport: the publisher creates a
/// single-response rendezvous and subscribes to its responses; the responder responds
/// and decrypts the responder info; the publisher gets the response by subscription
/// (where the transport pushes; HTTP refuses the subscription exactly) and by polling;
/// both derive the conversation keys from X25519 and exchange items both ways, the
/// publisher's inbound queue also by subscription, with acks; then deactivate and
/// activate.
fn rendezvous_and_conversation<T: Transport>(client: &Client<T>) {
    assert_eq!(client.ok("Ping", "ping", vec![]), Value::Bool(true));

    // The publisher creates a single-response rendezvous.
    let tag = hex::encode(rand::random::<[u8; 16]>());
    let (publisher, info) = creation_info(&tag, true, Some(600));
    let created = client.ok("Rendezvous", "create", vec![info.clone()]);
    assert_eq!(record_name(&created), "RendezvousCreated");
    assert_eq!(field(&created, "expiresAt").as_set().unwrap().len(), 1);
    assert_eq!(
        record_name(&client.ok("Rendezvous", "create", vec![info])),
        "RendezvousAlreadyExists"
    );
    // Nobody has responded yet.
    let none = client.ok(
        "Rendezvous",
        "getResponses",
        publisher.get_responses_args(0),
    );
    assert_eq!(field(&none, "responses"), &Value::Seq(vec![]));
    assert_eq!(field(&none, "sequenceValue"), &Value::Int64(0));
    // The publisher subscribes to the responses.
    let responses = request(
        "Rendezvous",
        "subscribeToResponses",
        &client.secret,
        publisher.tag_sig_args(Op::List),
    );
    let responses_pushed = client.subscribe(&responses);

    // The responder responds, checks the code and decrypts the responder info.
    let (responder_dh, response) = response_for(&tag);
    let registered = client.ok("Rendezvous", "respond", vec![response.clone()]);
    assert_eq!(record_name(&registered), "RendezvousResponseRegistered");
    let (hashed, enc_key, auth_key) = tag_keys(&tag);
    let info = field(&registered, "info");
    let sealed = field(info, "value").as_bytes().unwrap();
    assert_eq!(
        field(info, "authenticationCode").as_bytes().unwrap(),
        hmac(&auth_key, &[&hashed, sealed])
    );
    let responder_info = decode_value(&decrypt(&enc_key, decode_value(sealed).as_bytes().unwrap()));
    let requester_public: [u8; 32] = field(&responder_info, "requesterPublicKey")
        .as_bytes()
        .unwrap()
        .try_into()
        .unwrap();
    // Single response: a second responder is turned away.
    let (_, second) = response_for(&tag);
    let rejected = client.ok("Rendezvous", "respond", vec![second]);
    assert_eq!(
        rejected,
        Value::Record(Record::new(
            "RendezvousResponseRejected",
            vec![(
                "reason",
                Value::Record(Record::unit("RendezvousResponseMaxResponseCountReached"))
            )],
        ))
    );

    // The subscription pushes the response with sequence number 1.
    if responses_pushed {
        let pushed = client.pushed(&responses);
        assert_eq!(record_name(&pushed), "RendezvousResponseWithSequenceValue");
        assert_eq!(field(&pushed, "response"), &response);
        assert_eq!(field(&pushed, "sequenceValue"), &Value::Int64(1));
    }
    // The publisher polls and gets it with the same sequence number.
    let got = client.ok(
        "Rendezvous",
        "getResponses",
        publisher.get_responses_args(0),
    );
    assert_eq!(
        field(&got, "responses"),
        &Value::Seq(vec![response.clone()])
    );
    assert_eq!(field(&got, "sequenceValue"), &Value::Int64(1));
    let after = client.ok(
        "Rendezvous",
        "getResponses",
        publisher.get_responses_args(1),
    );
    assert_eq!(field(&after, "responses"), &Value::Seq(vec![]));
    let responder_public: [u8; 32] = field(&response, "responderPublicKey")
        .as_bytes()
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(
        field(&response, "responderAuthenticationCode")
            .as_bytes()
            .unwrap(),
        hmac(&publisher.auth_key, &[&publisher.hashed, &responder_public])
    );

    // Both derive the conversation keys from X25519.
    let shared_p = publisher
        .dh
        .diffie_hellman(&x25519_dalek::PublicKey::from(responder_public));
    let shared_r = responder_dh.diffie_hellman(&x25519_dalek::PublicKey::from(requester_public));
    assert_eq!(shared_p.as_bytes(), shared_r.as_bytes());
    let (p_in, r_in) = conversation(shared_p.as_bytes());
    let (p_in_r, r_in_r) = conversation(shared_r.as_bytes());

    // The publisher subscribes to its inbound queue; the responder writes to it.
    let inbound = request(
        "Conversations",
        "subscribe",
        &client.secret,
        p_in.subscribe_args(),
    );
    let items_pushed = client.subscribe(&inbound);
    for text in ["hello", "second"] {
        let published = client.ok("Conversations", "publish", p_in_r.publish_args(text));
        assert_eq!(record_name(&published), "ConversationPublishResult");
    }
    // The publisher reads (pushed, and by query), acks.
    let (texts, seqs, current) = p_in.read(client, None);
    assert_eq!(texts, ["hello", "second"]);
    let numbers: Vec<u64> = seqs
        .iter()
        .map(|s| u64::from_be_bytes(s.as_slice().try_into().unwrap()))
        .collect();
    assert_eq!(numbers[1], numbers[0] + 1);
    assert!(current);
    if items_pushed {
        for (text, seq) in texts.iter().zip(&seqs) {
            let pushed = client.pushed(&inbound);
            assert_eq!(record_name(&pushed), "ConversationItemWithSequenceValue");
            assert_eq!(&p_in.open(field(&pushed, "item")), text);
            assert_eq!(field(&pushed, "sequenceValue").as_bytes().unwrap(), seq);
        }
    }
    let (texts, _, _) = p_in.read(client, Some(&seqs[0]));
    assert_eq!(texts, ["second"]);
    assert_eq!(
        client.ok(
            "Conversations",
            "acknowledgeReceipt",
            p_in.ack_args(&seqs[1])
        ),
        Value::Record(Record::unit("ConversationAckResult"))
    );
    assert_eq!(p_in.read(client, None).0, Vec::<String>::new());

    // And back.
    client.ok("Conversations", "publish", r_in.publish_args("reply"));
    assert_eq!(r_in_r.read(client, None).0, ["reply"]);

    // Deactivated: responders are told the duration elapsed.
    let data = Value::Quid(publisher.hashed).encode();
    let deactivated = client.ok(
        "Rendezvous",
        "deactivate",
        vec![
            Value::Quid(publisher.hashed),
            publisher.sig(Op::Delete, &data),
        ],
    );
    assert_eq!(record_name(&deactivated), "RendezvousDeactivated");
    let mut data = Value::Quid(publisher.hashed).encode();
    data.extend(Value::Set(vec![Value::Int32(60)]).encode());
    let activated = client.ok(
        "Rendezvous",
        "activate",
        vec![
            Value::Quid(publisher.hashed),
            Value::Set(vec![Value::Int32(60)]),
            publisher.sig(Op::Create, &data),
        ],
    );
    assert_eq!(record_name(&activated), "RendezvousActivated");
    let data = Value::Quid(publisher.hashed).encode();
    let got = client.ok(
        "Rendezvous",
        "getInfo",
        vec![Value::Quid(publisher.hashed), publisher.sig(Op::Get, &data)],
    );
    assert_eq!(field(&got, "numOfResponses"), &Value::Int64(1));
    assert_eq!(
        field(&got, "responseCountLimit"),
        &Value::Record(Record::unit("RendezvousSingleResponse"))
    );
}

#[test]
fn rendezvous_and_conversation_over_http_with_the_sdk_crypto() {
    let relay = apps_relay(&[]);
    rendezvous_and_conversation(&Client::new(relay.addr));
}

#[test]
fn rendezvous_and_conversation_over_a_websocket_with_the_sdk_crypto() {
    let relay = apps_relay(&[]);
    let client = Client::over(WsTransport::new(ws_connect(relay.addr), relay.addr));
    rendezvous_and_conversation(&client);
    assert!(!relay.log().contains("panicked"), "{}", relay.log());
}

#[test]
fn every_refusal_is_an_exact_failure_result() {
    let relay = apps_relay(&[]);
    let client = Client::new(relay.addr);
    let tag = hex::encode(rand::random::<[u8; 16]>());
    let (publisher, info) = creation_info(&tag, false, None);
    client.ok("Rendezvous", "create", vec![info]);

    // Unknown tag and a malformed response.
    let (_, unknown) = response_for("never created");
    assert_eq!(
        client.ok("Rendezvous", "respond", vec![unknown]),
        Value::Record(Record::unit("RendezvousResponseUnknownTag"))
    );
    let (_, response) = response_for(&tag);
    let mut bad = response.as_record().unwrap().clone();
    bad.fields[2].1 = Value::Bytes(vec![1; 5]);
    assert_eq!(
        client.ok("Rendezvous", "respond", vec![Value::Record(bad)]),
        Value::Record(Record::new(
            "RendezvousResponseRejected",
            vec![(
                "reason",
                Value::Record(Record::unit("RendezvousResponseInvalid"))
            )],
        ))
    );
    // Deactivated: DurationElapsed.
    let data = Value::Quid(publisher.hashed).encode();
    client.ok(
        "Rendezvous",
        "deactivate",
        vec![
            Value::Quid(publisher.hashed),
            publisher.sig(Op::Delete, &data),
        ],
    );
    assert_eq!(
        client.ok("Rendezvous", "respond", vec![response]),
        Value::Record(Record::new(
            "RendezvousResponseRejected",
            vec![(
                "reason",
                Value::Record(Record::unit("RendezvousResponseDurationElapsed"))
            )],
        ))
    );

    // Ownership signatures: another key, another op, stale, replayed.
    let mut args = publisher.get_responses_args(0);
    let thief = SigningKey::from_bytes(&[3; 32]);
    let mut data = Value::Quid(publisher.hashed).encode();
    Value::Int64(0).encode_into(&mut data);
    args[2] = sign(&thief, Op::List, &data, &[1; 16], now_ms());
    assert_eq!(
        client.call("Rendezvous", "getResponses", args.clone()),
        failed(1007, "bad_signature", "bad ownership signature")
    );
    args[2] = sign(&publisher.owner, Op::Delete, &data, &[2; 16], now_ms());
    assert_eq!(
        client.call("Rendezvous", "getResponses", args.clone()),
        failed(1007, "bad_signature", "bad ownership signature")
    );
    args[2] = sign(
        &publisher.owner,
        Op::List,
        &data,
        &[3; 16],
        now_ms() - 600_000,
    );
    assert_eq!(
        client.call("Rendezvous", "getResponses", args.clone()),
        failed(1008, "stale_signature", "stale ownership signature")
    );
    let good = request(
        "Rendezvous",
        "getResponses",
        &client.secret,
        publisher.get_responses_args(0),
    );
    assert!(matches!(client.send(&good), Outcome::Success(_)));
    assert_eq!(
        client.send(&good),
        failed(1009, "replayed_signature", "replayed ownership signature")
    );
    assert_eq!(
        client.call(
            "Rendezvous",
            "getInfo",
            vec![Value::Quid([9; 32]), publisher.sig(Op::Get, &[])]
        ),
        failed(1011, "unknown_rendezvous", "unknown rendezvous")
    );

    // Envelope-level refusals.
    let wrong_app = request("Ping", "ping", b"not the secret", vec![]);
    assert_eq!(
        client.send(&wrong_app),
        failed(1003, "app_not_authorised", "app not authorised")
    );
    assert_eq!(
        client.call("Vault", "getItem", vec![]),
        failed(1004, "unknown_service", "unknown service")
    );
    assert_eq!(
        client.call("Rendezvous", "explode", vec![]),
        failed(1005, "unknown_operation", "unknown operation")
    );
    assert_eq!(
        client.call("Ping", "pong", vec![]),
        failed(1005, "unknown_operation", "unknown operation")
    );
    assert_eq!(
        client.call("Rendezvous", "create", vec![Value::Bool(true)]),
        failed(1006, "bad_arguments", "bad arguments")
    );
    assert_eq!(
        client.call(
            "Rendezvous",
            "subscribeToResponses",
            vec![Value::Quid([0; 32]), Value::Bool(true)]
        ),
        failed(
            1015,
            "needs_websocket",
            "multi-response operations need the WebSocket transport"
        )
    );
    let mut old = request("Ping", "ping", &client.secret, vec![]);
    old.header.protocol.minor = 2;
    assert_eq!(
        client.send(&old),
        failed(1002, "unsupported_version", "unsupported protocol version")
    );

    // Malformed and oversized bodies: 200 with a failure result, never a 5xx.
    let unaddressed = |code, name: &str, message: &str| lf::Response {
        header: Interchange {
            protocol: PROTOCOL_VERSION,
            release: PROTOCOL_VERSION,
            return_channel: vec![],
            correlation: vec![],
            service: "_".into(),
            operation: "_".into(),
        },
        outcome: failed(code, name, message),
    };
    for body in [&b"(3:abc"[..], b"", b"hello", b"(01:a)"] {
        let (status, reply) = post_raw(relay.addr, body);
        assert_eq!(status, 200);
        assert_eq!(
            reply,
            unaddressed(1000, "malformed_request", "malformed request").encode()
        );
    }
    // A well-formed header with a malformed argument: the failure is addressed.
    let mut broken = request("Ping", "ping", &client.secret, vec![]).encode();
    broken.truncate(broken.len() - 3);
    broken.extend_from_slice(b"1:Z)))");
    let (status, reply) = post_raw(relay.addr, &broken);
    assert_eq!(status, 200);
    let resp = lf::decode_response(&reply, &Limits::default()).unwrap();
    assert_eq!(resp.header.operation, "ping");
    assert_eq!(
        resp.outcome,
        failed(1000, "malformed_request", "malformed request")
    );
    let (status, reply) = post_raw(relay.addr, &vec![b'('; 70 * 1024]);
    assert_eq!(status, 200);
    assert_eq!(
        reply,
        unaddressed(1001, "request_too_large", "request too large").encode()
    );
    // A GET without the WebSocket upgrade is told to upgrade; another method is 405.
    let (status, body) = post_with(relay.addr, "GET", b"");
    assert_eq!(status, 426);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "upgrade_required");
    let (status, body) = post_with(relay.addr, "PUT", b"");
    assert_eq!(status, 405);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    assert!(!relay.log().contains("panicked"), "{}", relay.log());
}

#[test]
fn open_relay_answers_any_app_and_tls_carries_the_rpc() {
    let relay = Relay::start(&["--qredo-open", "true", "--tls-listen", "127.0.0.1:0"]);
    let client = Client {
        transport: Http(relay.addr),
        secret: b"anything".to_vec(),
    };
    assert_eq!(client.ok("Ping", "ping", vec![]), Value::Bool(true));
    let req = request("Ping", "ping", b"", vec![]).encode();
    let mut tls = crate::tls::tls_connect(&relay);
    let head = format!(
        "POST /services HTTP/1.1\r\nHost: relay\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        req.len()
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(&req).unwrap();
    let (status, body) = read_http(&mut tls);
    assert_eq!(status, 200);
    let resp = lf::decode_response(&body, &Limits::default()).unwrap();
    assert_eq!(resp.outcome, Outcome::Success(vec![Value::Bool(true)]));
}

#[test]
fn without_apps_or_open_every_call_is_refused() {
    let relay = Relay::http(&[]);
    let client = Client::new(relay.addr);
    assert_eq!(
        client.call("Ping", "ping", vec![]),
        failed(1003, "app_not_authorised", "app not authorised")
    );
}

type Ws<S = TcpStream> = tungstenite::WebSocket<S>;

/// Opens the WebSocket at `/services` on the plain listener at `addr`.
fn ws_connect(addr: SocketAddr) -> Ws {
    let stream = TcpStream::connect(addr).unwrap();
    // A missing answer fails the test instead of hanging it.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    ws_handshake(&format!("ws://{addr}/services"), stream)
}

/// Opens the WebSocket at `/services` through the relay's TLS listener (the generated
/// certificate pinned, as `tls.rs` does).
fn wss_connect(relay: &Relay) -> Ws<crate::tls::Tls> {
    let addr = relay.tls_addr.unwrap();
    ws_handshake(
        &format!("wss://{addr}/services"),
        crate::tls::tls_connect(relay),
    )
}

/// The SDK's handshake over `stream`: asks for the `qredo` subprotocol, which the relay
/// echoes with its `101`.
fn ws_handshake<S: Read + Write>(url: &str, stream: S) -> Ws<S> {
    use tungstenite::client::IntoClientRequest as _;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "qredo".parse().unwrap());
    let (ws, resp) = tungstenite::client(req, stream).expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["sec-websocket-protocol"], "qredo");
    ws
}

fn ws_send<S: Read + Write>(ws: &mut Ws<S>, req: &Request) {
    ws.send(tungstenite::Message::binary(req.encode())).unwrap();
}

fn ws_recv<S: Read + Write>(ws: &mut Ws<S>) -> lf::Response {
    loop {
        match ws.read().expect("a message") {
            tungstenite::Message::Binary(b) => {
                return lf::decode_response(&b, &Limits::default()).expect("a result");
            }
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Reads `sent.len()` results and returns them in the order of `sent`, matched by
/// correlation id (each request answered exactly once).
fn ws_recv_for<S: Read + Write>(ws: &mut Ws<S>, sent: &[&Request]) -> Vec<lf::Response> {
    let mut got: Vec<lf::Response> = (0..sent.len()).map(|_| ws_recv(ws)).collect();
    got.sort_by_key(|r| {
        sent.iter()
            .position(|s| s.header.correlation == r.header.correlation)
            .unwrap_or_else(|| panic!("an answer to nothing sent: {r:?}"))
    });
    for (r, s) in got.iter().zip(sent) {
        assert_eq!(r.header.correlation, s.header.correlation, "{r:?}");
        assert_eq!(r.header.service, s.header.service);
        assert_eq!(r.header.operation, s.header.operation);
    }
    got
}

/// A counter from `/metrics`.
fn metric(addr: SocketAddr, name: &str) -> u64 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (_, body) = read_http(&mut s);
    String::from_utf8(body)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name}"))
}

/// Waits (bounded) until `name` reads `want`.
fn await_metric(addr: SocketAddr, name: &str, want: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = metric(addr, name);
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} stayed {got}, want {want}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn websocket_carries_calls_in_flight_and_pushes_subscriptions() {
    let relay = apps_relay(&[]);
    let client = Client::new(relay.addr);
    let mut ws = ws_connect(relay.addr);

    // Several requests in flight on one socket, answered by correlation id.
    let tag = hex::encode(rand::random::<[u8; 16]>());
    let (publisher, info) = creation_info(&tag, false, None);
    let sent = [
        request("Ping", "ping", &client.secret, vec![]),
        request("Rendezvous", "create", &client.secret, vec![info]),
        request("Ping", "ping", &client.secret, vec![]),
    ];
    for r in &sent {
        ws_send(&mut ws, r);
    }
    let got = ws_recv_for(&mut ws, &sent.iter().collect::<Vec<_>>());
    assert_eq!(got[0].outcome, Outcome::Success(vec![Value::Bool(true)]));
    let Outcome::Success(created) = &got[1].outcome else {
        panic!("{:?}", got[1])
    };
    assert_eq!(record_name(&created[0]), "RendezvousCreated");
    assert_eq!(got[2].outcome, Outcome::Success(vec![Value::Bool(true)]));

    // One response before the subscription, one after: both are pushed, in order.
    let (_, first) = response_for(&tag);
    client.ok("Rendezvous", "respond", vec![first.clone()]);
    let data = Value::Quid(publisher.hashed).encode();
    let subscribe = request(
        "Rendezvous",
        "subscribeToResponses",
        &client.secret,
        vec![
            Value::Quid(publisher.hashed),
            publisher.sig(Op::List, &data),
        ],
    );
    ws_send(&mut ws, &subscribe);
    let pushed = |resp: lf::Response| {
        assert_eq!(resp.header.correlation, subscribe.header.correlation);
        let Outcome::Success(mut v) = resp.outcome else {
            panic!("{:?}", resp.outcome)
        };
        v.remove(0)
    };
    let one = pushed(ws_recv(&mut ws));
    assert_eq!(field(&one, "response"), &first);
    assert_eq!(field(&one, "sequenceValue"), &Value::Int64(1));
    await_metric(relay.addr, SUBSCRIPTIONS, 1);
    let (_, second) = response_for(&tag);
    client.ok("Rendezvous", "respond", vec![second.clone()]);
    let two = pushed(ws_recv(&mut ws));
    assert_eq!(field(&two, "response"), &second);
    assert_eq!(field(&two, "sequenceValue"), &Value::Int64(2));

    // A conversation queue subscription gets each published item.
    let queue = Queue {
        key: SigningKey::from_bytes(&rand::random()),
        enc: rand::random(),
        auth: rand::random(),
    };
    let sig = sign(
        &queue.key,
        Op::List,
        &[],
        &rand::random::<[u8; 16]>(),
        now_ms(),
    );
    let sub = request(
        "Conversations",
        "subscribe",
        &client.secret,
        vec![queue.id(), sig],
    );
    ws_send(&mut ws, &sub);
    await_metric(relay.addr, SUBSCRIPTIONS, 2);
    let args = queue.publish_args("pushed");
    let item = args[1].clone();
    client.ok("Conversations", "publish", args);
    let resp = ws_recv(&mut ws);
    assert_eq!(resp.header.correlation, sub.header.correlation);
    let Outcome::Success(v) = resp.outcome else {
        panic!("{:?}", resp.outcome)
    };
    assert_eq!(field(&v[0], "item"), &item);

    // A bad subscription signature is one failure result.
    let bad = request(
        "Rendezvous",
        "subscribeToResponses",
        &client.secret,
        vec![
            Value::Quid(publisher.hashed),
            publisher.sig(Op::Delete, &data),
        ],
    );
    ws_send(&mut ws, &bad);
    let resp = ws_recv(&mut ws);
    assert_eq!(resp.header.correlation, bad.header.correlation);
    assert_eq!(
        resp.outcome,
        failed(1007, "bad_signature", "bad ownership signature")
    );

    // The socket dies: its subscriptions end; the relay carries on.
    drop(ws);
    await_metric(relay.addr, SUBSCRIPTIONS, 0);
    let (_, third) = response_for(&tag);
    assert_eq!(
        record_name(&client.ok("Rendezvous", "respond", vec![third])),
        "RendezvousResponseRegistered"
    );
    assert!(!relay.log().contains("panicked"), "{}", relay.log());
}

#[test]
fn the_websocket_runs_through_the_tls_listener() {
    let relay = apps_relay(&["--tls-listen", "127.0.0.1:0"]);
    let client = Client::new(relay.addr);
    let mut ws = wss_connect(&relay);

    // Calls in flight on the TLS socket, each answered under its correlation id; a
    // refusal among them is its exact failure result.
    let tag = hex::encode(rand::random::<[u8; 16]>());
    let (publisher, info) = creation_info(&tag, false, None);
    let ping = request("Ping", "ping", &client.secret, vec![]);
    let create = request("Rendezvous", "create", &client.secret, vec![info]);
    let stranger = request("Ping", "ping", b"not the secret", vec![]);
    for r in [&ping, &create, &stranger] {
        ws_send(&mut ws, r);
    }
    let got = ws_recv_for(&mut ws, &[&ping, &create, &stranger]);
    assert_eq!(got[0].outcome, Outcome::Success(vec![Value::Bool(true)]));
    let Outcome::Success(created) = &got[1].outcome else {
        panic!("{:?}", got[1])
    };
    assert_eq!(record_name(&created[0]), "RendezvousCreated");
    assert_eq!(
        got[2].outcome,
        failed(1003, "app_not_authorised", "app not authorised")
    );

    // A subscription on the TLS socket: a response registered over plain HTTP is pushed.
    let data = Value::Quid(publisher.hashed).encode();
    let subscribe = request(
        "Rendezvous",
        "subscribeToResponses",
        &client.secret,
        vec![
            Value::Quid(publisher.hashed),
            publisher.sig(Op::List, &data),
        ],
    );
    ws_send(&mut ws, &subscribe);
    await_metric(relay.addr, SUBSCRIPTIONS, 1);
    let (_, first) = response_for(&tag);
    assert_eq!(
        record_name(&client.ok("Rendezvous", "respond", vec![first.clone()])),
        "RendezvousResponseRegistered"
    );
    let push = ws_recv(&mut ws);
    assert_eq!(push.header.correlation, subscribe.header.correlation);
    let pushed = |outcome: &Outcome| match outcome {
        Outcome::Success(v) if v.len() == 1 => v[0].clone(),
        other => panic!("{other:?}"),
    };
    let one = pushed(&push.outcome);
    assert_eq!(field(&one, "response"), &first);
    assert_eq!(field(&one, "sequenceValue"), &Value::Int64(1));

    // A call on the same socket while the subscription lives: its answer and the push
    // it causes both arrive, each under its own correlation id.
    let (_, second) = response_for(&tag);
    let respond = request(
        "Rendezvous",
        "respond",
        &client.secret,
        vec![second.clone()],
    );
    ws_send(&mut ws, &respond);
    let got = ws_recv_for(&mut ws, &[&respond, &subscribe]);
    assert_eq!(
        record_name(&pushed(&got[0].outcome)),
        "RendezvousResponseRegistered"
    );
    let two = pushed(&got[1].outcome);
    assert_eq!(field(&two, "response"), &second);
    assert_eq!(field(&two, "sequenceValue"), &Value::Int64(2));

    // The TLS socket closes: its subscription ends.
    ws.close(None).unwrap();
    drop(ws);
    await_metric(relay.addr, SUBSCRIPTIONS, 0);

    // The whole SDK flow on another TLS socket.
    rendezvous_and_conversation(&Client::over(WsTransport::new(
        wss_connect(&relay),
        relay.addr,
    )));
    assert!(!relay.log().contains("panicked"), "{}", relay.log());
}

// ----- One tag table for `/services` and `CONNECT tag:` -----

/// The exact refusal bytes the `tag:` family sends (as `tag.rs` checks them).
fn tag_refusal(status: &str, code: &str, message: &str) -> String {
    let body = format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#);
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A `CONNECT tag:` park signed by `key` (the tag family's proof), as a request.
fn tag_park_head(hashed: [u8; 32], key: &SigningKey) -> String {
    tryst_client::tag::park_request(
        &tryst_client::tag::HashedTag(hashed),
        key,
        crate::tunnel::now_unix(),
        &rand::random::<[u8; 16]>(),
        &tryst_client::tag::CreateOptions::default(),
    )
}

/// Parks a publisher connection with `CONNECT tag:` and reads its 200.
fn tag_park(relay: &Relay, hashed: [u8; 32], key: &SigningKey) -> TcpStream {
    let mut s = relay.connect();
    s.write_all(tag_park_head(hashed, key).as_bytes()).unwrap();
    assert_eq!(
        crate::tunnel::read_exact_n(&mut s, crate::tunnel::OK.len()),
        crate::tunnel::OK,
        "tag park refused"
    );
    s
}

fn tag_reach_head(hashed: [u8; 32]) -> String {
    tryst_client::tag::reach_head(&tryst_client::tag::HashedTag(hashed), None)
}

/// A tunnel responder: reaches the tag and checks bytes both ways with `publisher`
/// (which first gets the responder hello frame without a challenge).
fn tunnel_both_ways(relay: &Relay, hashed: [u8; 32], publisher: &mut TcpStream) {
    use crate::tunnel::read_exact_n;
    let mut responder = relay.connect();
    responder
        .write_all(tag_reach_head(hashed).as_bytes())
        .unwrap();
    assert_eq!(
        read_exact_n(&mut responder, crate::tunnel::OK.len()),
        crate::tunnel::OK
    );
    assert_eq!(read_exact_n(publisher, 10), b"TAGHELLO\x01\x00");
    responder.write_all(b"ping").unwrap();
    assert_eq!(read_exact_n(publisher, 4), b"ping");
    publisher.write_all(b"pong").unwrap();
    assert_eq!(read_exact_n(&mut responder, 4), b"pong");
}

fn max_count_reached() -> Value {
    Value::Record(Record::new(
        "RendezvousResponseRejected",
        vec![(
            "reason",
            Value::Record(Record::unit("RendezvousResponseMaxResponseCountReached")),
        )],
    ))
}

impl Publisher {
    fn tag_sig_args(&self, op: Op) -> Vec<Value> {
        let data = Value::Quid(self.hashed).encode();
        vec![Value::Quid(self.hashed), self.sig(op, &data)]
    }

    fn activate_args(&self, duration: i32) -> Vec<Value> {
        let duration = Value::Set(vec![Value::Int32(duration)]);
        let mut data = Value::Quid(self.hashed).encode();
        duration.encode_into(&mut data);
        vec![
            Value::Quid(self.hashed),
            duration.clone(),
            self.sig(Op::Create, &data),
        ]
    }

    fn num_of_responses(&self, client: &Client) -> &'static str {
        let info = client.ok("Rendezvous", "getInfo", self.tag_sig_args(Op::Get));
        match field(&info, "numOfResponses") {
            Value::Int64(0) => "0",
            Value::Int64(1) => "1",
            other => panic!("numOfResponses {other:?}"),
        }
    }
}

/// The creation info with another ownership key (a publisher may register any key).
fn with_owner(info: Value, owner: &SigningKey) -> Value {
    let Value::Record(mut r) = info else {
        panic!("not a record")
    };
    for (name, v) in &mut r.fields {
        if name == "ownershipPublicKey" {
            *v = Value::Bytes(owner.verifying_key().as_bytes().to_vec());
        }
    }
    Value::Record(r)
}

#[test]
fn a_rendezvous_created_over_rpc_is_reached_as_a_tunnel() {
    let relay = Relay::start(&["--qredo-open", "true"]);
    let client = Client::new(relay.addr);
    let tag = hex::encode(rand::random::<[u8; 16]>());
    let (publisher, info) = creation_info(&tag, false, Some(600));
    assert_eq!(
        record_name(&client.ok("Rendezvous", "create", vec![info])),
        "RendezvousCreated"
    );
    // The publisher parks with the tag family's proof by the rendezvous' owner key.
    let mut parked = tag_park(&relay, publisher.hashed, &publisher.owner);
    tunnel_both_ways(&relay, publisher.hashed, &mut parked);
    // Unlimited: RPC responders are still registered, and tunnels keep working.
    let (_, response) = response_for(&tag);
    assert_eq!(
        record_name(&client.ok("Rendezvous", "respond", vec![response])),
        "RendezvousResponseRegistered"
    );
    let mut again = tag_park(&relay, publisher.hashed, &publisher.owner);
    tunnel_both_ways(&relay, publisher.hashed, &mut again);
    // A park by any other key is refused: the tag's owner is the RPC creation's.
    let stranger = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    assert_eq!(
        relay.exchange(tag_park_head(publisher.hashed, &stranger).as_bytes()),
        tag_refusal("403 Forbidden", "bad_proof", "proof does not verify")
    );
    // A tag a publisher created with `CONNECT tag:` is not taken over by an RPC create.
    let tunnel_tag = hex::encode(rand::random::<[u8; 16]>());
    let (tunnel_publisher, tunnel_info) = creation_info(&tunnel_tag, false, Some(600));
    let mut held = tag_park(&relay, tunnel_publisher.hashed, &tunnel_publisher.owner);
    assert_eq!(
        record_name(&client.ok("Rendezvous", "create", vec![tunnel_info])),
        "RendezvousAlreadyExists"
    );
    // ... and stays unknown to `/services` (docs/compat/qredo.md says why): an SDK
    // responder is told `UnknownTag`, the owner's operations `unknown_rendezvous`, even
    // signed by the very key its parks use.
    let (_, tunnel_response) = response_for(&tunnel_tag);
    assert_eq!(
        client.ok("Rendezvous", "respond", vec![tunnel_response]),
        Value::Record(Record::unit("RendezvousResponseUnknownTag"))
    );
    for (op, signed) in [("getInfo", Op::Get), ("deactivate", Op::Delete)] {
        assert_eq!(
            client.call("Rendezvous", op, tunnel_publisher.tag_sig_args(signed)),
            failed(1011, "unknown_rendezvous", "unknown rendezvous"),
            "{op}"
        );
    }
    assert_eq!(
        client.call(
            "Rendezvous",
            "getResponses",
            tunnel_publisher.get_responses_args(0)
        ),
        failed(1011, "unknown_rendezvous", "unknown rendezvous")
    );
    assert_eq!(
        client.call(
            "Rendezvous",
            "activate",
            tunnel_publisher.activate_args(600)
        ),
        failed(1011, "unknown_rendezvous", "unknown rendezvous")
    );
    // The tunnel tag itself is untouched by all that: a responder still reaches it.
    tunnel_both_ways(&relay, tunnel_publisher.hashed, &mut held);
}

#[test]
fn a_single_shot_tag_is_consumed_once_whichever_way_the_responder_comes() {
    let relay = Relay::start(&["--qredo-open", "true"]);
    let client = Client::new(relay.addr);

    // A tunnel responder takes it: RPC responders are refused, getInfo counts it.
    let tag = hex::encode(rand::random::<[u8; 16]>());
    let (publisher, info) = creation_info(&tag, true, Some(600));
    assert_eq!(
        record_name(&client.ok("Rendezvous", "create", vec![info])),
        "RendezvousCreated"
    );
    assert_eq!(publisher.num_of_responses(&client), "0");
    let mut parked = tag_park(&relay, publisher.hashed, &publisher.owner);
    tunnel_both_ways(&relay, publisher.hashed, &mut parked);
    let (_, response) = response_for(&tag);
    assert_eq!(
        client.ok("Rendezvous", "respond", vec![response]),
        max_count_reached()
    );
    assert_eq!(publisher.num_of_responses(&client), "1");
    assert_eq!(
        relay.exchange(tag_reach_head(publisher.hashed).as_bytes()),
        tag_refusal("404 Not Found", "unknown_tag", "no such tag")
    );

    // An RPC responder takes it: tunnel responders are refused.
    let tag = hex::encode(rand::random::<[u8; 16]>());
    let (publisher, info) = creation_info(&tag, true, Some(600));
    assert_eq!(
        record_name(&client.ok("Rendezvous", "create", vec![info])),
        "RendezvousCreated"
    );
    let _parked = tag_park(&relay, publisher.hashed, &publisher.owner);
    let (_, response) = response_for(&tag);
    assert_eq!(
        record_name(&client.ok("Rendezvous", "respond", vec![response])),
        "RendezvousResponseRegistered"
    );
    assert_eq!(
        relay.exchange(tag_reach_head(publisher.hashed).as_bytes()),
        tag_refusal("404 Not Found", "unknown_tag", "no such tag")
    );
    let (_, second) = response_for(&tag);
    assert_eq!(
        client.ok("Rendezvous", "respond", vec![second]),
        max_count_reached()
    );
    assert_eq!(publisher.num_of_responses(&client), "1");
}

#[test]
fn deactivate_over_rpc_evicts_the_parked_publishers_and_activate_revives() {
    let relay = Relay::start(&["--qredo-open", "true"]);
    let client = Client::new(relay.addr);
    let tag = hex::encode(rand::random::<[u8; 16]>());
    let (publisher, info) = creation_info(&tag, false, Some(600));
    assert_eq!(
        record_name(&client.ok("Rendezvous", "create", vec![info])),
        "RendezvousCreated"
    );
    let mut parked = tag_park(&relay, publisher.hashed, &publisher.owner);
    assert_eq!(
        record_name(&client.ok(
            "Rendezvous",
            "deactivate",
            publisher.tag_sig_args(Op::Delete)
        )),
        "RendezvousDeactivated"
    );
    // The parked publisher is closed by the relay (EOF, nothing sent).
    assert_eq!(crate::tunnel::read_to_close(&mut parked), "");
    assert_eq!(
        relay.exchange(tag_reach_head(publisher.hashed).as_bytes()),
        tag_refusal("404 Not Found", "unknown_tag", "no such tag")
    );
    assert_eq!(
        relay.exchange(tag_park_head(publisher.hashed, &publisher.owner).as_bytes()),
        tag_refusal("410 Gone", "tag_gone", "tag consumed or expired")
    );
    // `activate` revives it for tunnels too.
    assert_eq!(
        record_name(&client.ok("Rendezvous", "activate", publisher.activate_args(600))),
        "RendezvousActivated"
    );
    let mut parked = tag_park(&relay, publisher.hashed, &publisher.owner);
    tunnel_both_ways(&relay, publisher.hashed, &mut parked);
}

#[test]
fn a_restarted_worker_gets_the_shared_tags_again() {
    use crate::tunnel::{now_unix, wait_past, worker_pids};
    let relay = Relay::start(&["--qredo-open", "true", "--workers", "1"]);
    let client = Client::new(relay.addr);
    // Owned by a registered key, not the one derived from the tag: a worker that had
    // lost the shared entry would accept a park by the derived key as a new tag.
    let owner = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let tag = hex::encode(rand::random::<[u8; 16]>());
    let (publisher, info) = creation_info(&tag, false, Some(600));
    assert_eq!(
        record_name(&client.ok("Rendezvous", "create", vec![with_owner(info, &owner)])),
        "RendezvousCreated"
    );
    let derived_park = tag_park_head(publisher.hashed, &publisher.owner);
    let bad_proof = tag_refusal("403 Forbidden", "bad_proof", "proof does not verify");
    assert_eq!(relay.exchange(derived_park.as_bytes()), bad_proof);

    let before = worker_pids(&relay.metrics());
    assert_eq!(before.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let pids = worker_pids(&relay.metrics());
        if pids.len() == 1 && pids != before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "worker was not restarted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The replacement refuses proofs stamped in or before its first second.
    wait_past(now_unix());
    assert_eq!(
        relay.exchange(tag_park_head(publisher.hashed, &publisher.owner).as_bytes()),
        bad_proof
    );
    let mut parked = tag_park(&relay, publisher.hashed, &owner);
    tunnel_both_ways(&relay, publisher.hashed, &mut parked);
}

/// With the dead-drop on PostgreSQL the `Conversations` queues live in its database:
/// items published through one node are read and acknowledged through another and
/// pushed to its subscribers, they outlive the node that took them, and no node writes a
/// `qredo.redb` of its own.
#[test]
fn conversations_live_in_the_dead_drop_database_shared_by_nodes() {
    let url = tryst_relay::deaddrop::pg::testing::fresh_database()
        .expect("TRYST_TEST_PG is set but its cluster is unusable");
    let Some(url) = url else {
        eprintln!(
            "\n*** SKIPPED conversations_live_in_the_dead_drop_database_shared_by_nodes: \
             TRYST_TEST_PG is not set (./scripts/test.sh sets it) ***\n"
        );
        return;
    };
    let a = apps_relay(&["--deaddrop-store", &url]);
    let b = apps_relay(&["--deaddrop-store", &url]);
    let (via_a, via_b) = (Client::new(a.addr), Client::new(b.addr));
    let (inbound, _) = conversation(&rand::random());
    // A subscriber on node B is pushed what is published through node A.
    let (subscriber, subscription) = ws_subscriber(b.addr, &inbound);
    let mut published = Vec::new();
    for text in ["one", "two", "three"] {
        let result = via_a.ok("Conversations", "publish", inbound.publish_args(text));
        published.push(field(&result, "sequenceValue").as_bytes().unwrap().to_vec());
    }
    let (texts, seqs, current) = inbound.read(&via_b, None);
    assert_eq!(texts, ["one", "two", "three"]);
    assert_eq!(seqs, published);
    assert!(current);
    for (text, seq) in texts.iter().zip(&seqs) {
        let pushed = subscriber.pushed(&subscription);
        assert_eq!(record_name(&pushed), "ConversationItemWithSequenceValue");
        assert_eq!(&inbound.open(field(&pushed, "item")), text);
        assert_eq!(field(&pushed, "sequenceValue").as_bytes().unwrap(), seq);
    }
    assert_eq!(
        via_b.ok(
            "Conversations",
            "acknowledgeReceipt",
            inbound.ack_args(&seqs[0])
        ),
        Value::Record(Record::unit("ConversationAckResult"))
    );
    assert_eq!(inbound.read(&via_a, None).0, ["two", "three"]);
    // The database drops both nodes' LISTEN connections (a failover, an operator's
    // pg_terminate_backend): they connect again by themselves, and pushes resume.
    let listeners = format!(
        "application_name = '{}' AND datname = current_database()",
        tryst_relay::qredo::pg::LISTENER_NAME
    );
    assert_eq!(
        pg_count(
            &url,
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE {listeners}"
            )
        ),
        2
    );
    let listening = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE {listeners} \
         AND (query LIKE 'LISTEN%' OR query LIKE 'SELECT item%')"
    );
    crate::cluster_http::eventually("both nodes listening again", || {
        pg_count(&url, &listening) == 2
    });
    let again = via_a.ok("Conversations", "publish", inbound.publish_args("after"));
    let pushed = subscriber.pushed(&subscription);
    assert_eq!(inbound.open(field(&pushed, "item")), "after");
    assert_eq!(
        field(&pushed, "sequenceValue"),
        field(&again, "sequenceValue")
    );
    assert_eq!(
        via_b.ok(
            "Conversations",
            "acknowledgeReceipt",
            inbound.ack_args(field(&again, "sequenceValue").as_bytes().unwrap())
        ),
        Value::Record(Record::unit("ConversationAckResult"))
    );
    for relay in [&a, &b] {
        assert!(!relay.data_dir().join("qredo.redb").exists());
    }
    // The node that took them is gone (killed); the other still serves them, and
    // numbers the next one after them.
    drop(a);
    let next = via_b.ok("Conversations", "publish", inbound.publish_args("four"));
    let (texts, later, _) = inbound.read(&via_b, Some(&seqs[0]));
    assert_eq!(texts, ["four"]);
    assert_eq!(
        field(&next, "sequenceValue").as_bytes().unwrap(),
        later[0].as_slice()
    );
    assert!(later[0] > seqs[2]);
}

/// The one number `sql` returns, on the test database `url`.
fn pg_count(url: &str, sql: &str) -> i64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let n: i64 = client.query_one(sql, &[]).await.unwrap().get(0);
        drop(client);
        let _ = conn.await;
        n
    })
}

/// In a cluster a rendezvous lives on the node it was created through, and every other
/// node carries its calls there: the publisher creates and subscribes over a WebSocket
/// on a; responders on b and c register responses that are pushed to it; the same tag
/// created through b is `RendezvousAlreadyExists`; c reads the responses; an unknown tag
/// is refused by the node asked, which claims nothing for it.
#[test]
fn a_rendezvous_created_on_one_node_is_served_through_every_node() {
    let three = crate::cluster::Three::start(&["--qredo-open", "true"]);
    let [a, b, c] = &three.nodes[..] else {
        unreachable!()
    };
    let tag = hex::encode(rand::random::<[u8; 16]>());
    let (publisher, info) = creation_info(&tag, false, Some(600));
    let on_a = Client::over(WsTransport::new(ws_connect(a.addr), a.addr));
    let created = on_a.ok("Rendezvous", "create", vec![info.clone()]);
    assert_eq!(record_name(&created), "RendezvousCreated");
    assert_eq!(
        record_name(&Client::new(b.addr).ok("Rendezvous", "create", vec![info])),
        "RendezvousAlreadyExists"
    );
    let responses = request(
        "Rendezvous",
        "subscribeToResponses",
        &on_a.secret,
        publisher.tag_sig_args(Op::List),
    );
    assert!(on_a.subscribe(&responses));
    let mut registered = Vec::new();
    for (i, node) in [b, c].into_iter().enumerate() {
        let (_, response) = response_for(&tag);
        let answer = Client::new(node.addr).ok("Rendezvous", "respond", vec![response.clone()]);
        assert_eq!(record_name(&answer), "RendezvousResponseRegistered");
        let pushed = on_a.pushed(&responses);
        assert_eq!(field(&pushed, "response"), &response);
        assert_eq!(
            field(&pushed, "sequenceValue"),
            &Value::Int64(i64::try_from(i).unwrap() + 1)
        );
        registered.push(response);
    }
    let got = Client::new(c.addr).ok(
        "Rendezvous",
        "getResponses",
        publisher.get_responses_args(0),
    );
    assert_eq!(field(&got, "responses"), &Value::Seq(registered));
    assert_eq!(field(&got, "sequenceValue"), &Value::Int64(2));
    let carried = |node: &Relay| {
        crate::tunnel::series_value(
            &node.metrics(),
            "tryst_cluster_http_proxied_total{family=\"qredo_rendezvous\"}",
        )
    };
    // b: the create and a respond; c: a respond and the read.
    assert_eq!((carried(a), carried(b), carried(c)), (0, 2, 2));
    // A tag nobody created: b answers it itself and claims nothing for it.
    let (stranger, _) = creation_info(&hex::encode(rand::random::<[u8; 16]>()), false, None);
    let data = Value::Quid(stranger.hashed).encode();
    assert_eq!(
        Client::new(b.addr).call(
            "Rendezvous",
            "getInfo",
            vec![Value::Quid(stranger.hashed), stranger.sig(Op::Get, &data)],
        ),
        failed(1011, "unknown_rendezvous", "unknown rendezvous")
    );
    assert_eq!(carried(b), 2);
    let key = format!("tryst:qredo:{}", hex::encode(stranger.hashed));
    let out = std::process::Command::new("redis-cli")
        .arg("-s")
        .arg(&three.redis.socket)
        .args(["EXISTS", &key])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
}

/// The dead-drop's PostgreSQL stopped and started again under `Conversations`: while it
/// is down a publish and a query are answered `store_unavailable` (1014, never a 5xx),
/// nothing is stored; once it is back, the same relay publishes, reads and pushes to its
/// subscriber again without a restart (its `LISTEN` connection comes back by itself).
#[test]
fn conversations_ride_out_a_postgres_restart() {
    if !crate::deaddrop::postgres_available("conversations_ride_out_a_postgres_restart") {
        return;
    }
    let cluster = crate::deaddrop::Cluster::start();
    let url = tryst_relay::deaddrop::pg::testing::fresh_database_at(&cluster.socket).unwrap();
    let relay = apps_relay(&["--deaddrop-store", &url]);
    let client = Client::new(relay.addr);
    let (inbound, _) = conversation(&rand::random());
    client.ok("Conversations", "publish", inbound.publish_args("before"));

    cluster.stop();
    let unavailable = failed(1014, "store_unavailable", "store unavailable");
    assert_eq!(
        client.call("Conversations", "publish", inbound.publish_args("lost")),
        unavailable
    );
    assert_eq!(
        client.call("Conversations", "queryItems", inbound.query_args(None, 10)),
        unavailable
    );

    cluster.start_again();
    // The pool drops the broken connections and makes new ones on the next call.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match client.call("Conversations", "publish", inbound.publish_args("after")) {
            Outcome::Success(_) => break,
            other => {
                assert_eq!(other, unavailable);
                assert!(std::time::Instant::now() < deadline, "still unavailable");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
    assert_eq!(inbound.read(&client, None).0, ["before", "after"]);
    // A second node's publish reaches this relay's subscriber: its listener is back.
    let other = apps_relay(&["--deaddrop-store", &url]);
    let (subscriber, subscription) = ws_subscriber(relay.addr, &inbound);
    let listening = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{}' \
         AND datname = current_database() \
         AND (query LIKE 'LISTEN%' OR query LIKE 'SELECT item%')",
        tryst_relay::qredo::pg::LISTENER_NAME
    );
    crate::cluster_http::eventually("both nodes listening", || pg_count(&url, &listening) == 2);
    Client::new(other.addr).ok("Conversations", "publish", inbound.publish_args("pushed"));
    let pushed = subscriber.pushed(&subscription);
    assert_eq!(inbound.open(field(&pushed, "item")), "pushed");
}
