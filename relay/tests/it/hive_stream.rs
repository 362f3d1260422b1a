//! The Hive streaming fallback (`CONNECT hive:`) through `tryst serve`: a tunnel carrying
//! 1 MiB each way, every refusal with its exact bytes over a socket, and the issue's
//! "Done when" run: two simulated devices (Ed25519 keys) learn their reflexive address
//! from the STUN responder, publish, find each other, exchange frames through
//! /v1/forward and then through a streaming tunnel.

use crate::relay::Relay;
use crate::tunnel::{OK, now_unix, read_exact_n, series_value};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, SigningKey};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;
use tryst_client::hive::{HiveTarget, park_proof_header, proof_message};
use tryst_engine::reject::Rejection;
use tryst_relay::hive::forward::DRAIN_DOMAIN;
use tryst_relay::hive::record::{Candidate, Record, format_rfc3339_utc, format_uuid};
use tryst_relay::hive::verify::{PublicationPolicy, sign_publication, verify_publication};
use tryst_relay::stun::message::{binding_request, parse};

const WS: [u8; 16] = [0x7e; 16];

/// The flags of [`start`].
const FLAGS: [&str; 6] = [
    "--stun-listen",
    "127.0.0.1:0",
    "--client-wait",
    "10s",
    "--forward-poll-timeout",
    "2s",
];

/// A relay (two workers, STUN on) for one test.
fn start() -> Relay {
    Relay::start(&FLAGS)
}

/// A connection to the relay with a read timeout long enough for a 1 MiB exchange.
fn connect(relay: &Relay) -> TcpStream {
    let s = relay.connect();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
fn http(
    relay: &Relay,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s = connect(relay);
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n");
    if let Some(a) = auth {
        head.push_str(&format!("Authorization: {a}\r\n"));
    }
    if method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&raw)));
    let status = std::str::from_utf8(&raw[9..12]).unwrap().parse().unwrap();
    (status, raw[end + 4..].to_vec())
}

/// A simulated Hive device: an Ed25519 key and its device id.
struct Device {
    key: SigningKey,
    id: [u8; 16],
}

impl Device {
    fn new(n: u8) -> Self {
        Self {
            key: SigningKey::from_bytes(&[n; 32]),
            id: [n; 16],
        }
    }

    fn target(&self) -> HiveTarget {
        HiveTarget {
            workspace: WS,
            device: self.id,
        }
    }

    fn target_text(&self) -> String {
        format!("hive:{}/{}", format_uuid(&WS), format_uuid(&self.id))
    }

    /// A signed publication with `candidates`, published now.
    fn publication(&self, candidates: Vec<Candidate>) -> Vec<u8> {
        let record = Record {
            workspace: WS,
            account: [0x11; 16],
            device: self.id,
            signing_key: [0; 32],
            candidates,
            published_at: format_rfc3339_utc(i64::try_from(now_unix()).unwrap()),
            ttl_seconds: 120,
        };
        sign_publication(&self.key, &record)
    }

    /// The park head for `publication` with a fresh proof using `nonce`.
    fn park_head(&self, publication: &[u8], nonce: u8) -> String {
        self.park_head_at(publication, nonce, now_unix())
    }

    /// The park head for `publication` with a proof stamped `ts` using `nonce`.
    fn park_head_at(&self, publication: &[u8], nonce: u8, ts: u64) -> String {
        format!(
            "CONNECT {} HTTP/1.1\r\nHive-Publication: {}\r\nProxy-Authorization: {}\r\n\r\n",
            self.target_text(),
            STANDARD.encode(publication),
            park_proof_header(&self.key, &self.target(), ts, &[nonce; 16])
        )
    }

    fn drain_auth(&self, nonce: u8) -> String {
        self.drain_auth_for(self, nonce)
    }

    /// A drain proof for `mailbox`'s mailbox signed with this device's key.
    fn drain_auth_for(&self, mailbox: &Self, nonce: u8) -> String {
        self.drain_auth_at(mailbox, nonce, now_unix())
    }

    /// A drain proof for `mailbox`'s mailbox stamped `ts`, signed with this device's key.
    fn drain_auth_at(&self, mailbox: &Self, nonce: u8, ts: u64) -> String {
        let msg = proof_message(DRAIN_DOMAIN, &WS, &mailbox.id, ts, &[nonce; 16]);
        format!(
            "Hive-Drain ts={ts}, nonce={}, sig={}",
            hex::encode([nonce; 16]),
            STANDARD.encode(self.key.sign(&msg).to_bytes())
        )
    }

    fn forward_path(&self) -> String {
        format!("/v1/forward/{}/{}", format_uuid(&WS), format_uuid(&self.id))
    }
}

fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

/// Parks `device` with `publication` and reads its 200.
fn park(relay: &Relay, device: &Device, publication: &[u8], nonce: u8) -> TcpStream {
    let mut s = connect(relay);
    s.write_all(device.park_head(publication, nonce).as_bytes())
        .unwrap();
    assert_eq!(read_exact_n(&mut s, OK.len()), OK);
    s
}

/// Reaches `device` (no proof) and reads its 200.
fn reach(relay: &Relay, device: &Device) -> TcpStream {
    let mut s = connect(relay);
    s.write_all(format!("CONNECT {} HTTP/1.1\r\n\r\n", device.target_text()).as_bytes())
        .unwrap();
    assert_eq!(read_exact_n(&mut s, OK.len()), OK);
    s
}

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) ^ seed) as u8)
        .collect()
}

/// Sends `out` on `s` while reading `want.len()` bytes from it; asserts they are `want`.
fn exchange(mut s: TcpStream, out: Vec<u8>, want: &[u8]) -> TcpStream {
    let mut writer = s.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(&out).unwrap());
    let got = read_exact_n(&mut s, want.len());
    sender.join().unwrap();
    assert!(got == want, "bytes differ ({} received)", got.len());
    s
}

#[test]
fn streaming_tunnel_carries_one_mebibyte_each_way() {
    let relay = start();
    let server = Device::new(1);
    let publication = server.publication(Vec::new());
    let parked = park(&relay, &server, &publication, 1);
    let client = reach(&relay, &server);
    let up = pattern(1, 1 << 20);
    let down = pattern(2, 1 << 20);
    let (up2, down2) = (up.clone(), down.clone());
    let server_side = thread::spawn(move || exchange(parked, down2, &up2));
    let mut client = exchange(client, up, &down);
    let mut parked = server_side.join().unwrap();
    // Half-close travels too: each side then sees EOF.
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut parked), b"");
    parked.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut client), b"");
}

#[test]
fn refusals_over_a_socket_are_exact() {
    let relay = start();
    let device = Device::new(2);
    let other = Device::new(3);
    let publication = device.publication(Vec::new());
    let refuse = |request: &[u8], want: Rejection| {
        let mut s = connect(&relay);
        s.write_all(request).unwrap();
        let got = read_to_close(&mut s);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want.response()),
            "{want:?}"
        );
    };
    // 400 malformed target.
    refuse(
        format!("CONNECT hive:{}/nope HTTP/1.1\r\n\r\n", format_uuid(&WS)).as_bytes(),
        Rejection::MalformedHiveTarget,
    );
    // 400 malformed proof header.
    refuse(
        format!(
            "CONNECT {} HTTP/1.1\r\nHive-Publication: {}\r\nProxy-Authorization: Hive ts=1\r\n\r\n",
            device.target_text(),
            STANDARD.encode(&publication)
        )
        .as_bytes(),
        Rejection::MalformedProof,
    );
    // 400 no publication, and a forged one.
    refuse(
        format!(
            "CONNECT {} HTTP/1.1\r\nProxy-Authorization: {}\r\n\r\n",
            device.target_text(),
            park_proof_header(&device.key, &device.target(), now_unix(), &[1; 16])
        )
        .as_bytes(),
        Rejection::MalformedPublication,
    );
    let forged = String::from_utf8(publication.clone())
        .unwrap()
        .replace("\"ttlSeconds\":120", "\"ttlSeconds\":121");
    refuse(
        device.park_head(forged.as_bytes(), 2).as_bytes(),
        Rejection::MalformedPublication,
    );
    // 403 another device's valid publication.
    refuse(
        device
            .park_head(&other.publication(Vec::new()), 3)
            .as_bytes(),
        Rejection::PublicationMismatch,
    );
    // 401 a proof signed by another key.
    let wrong_key = format!(
        "CONNECT {} HTTP/1.1\r\nHive-Publication: {}\r\nProxy-Authorization: {}\r\n\r\n",
        device.target_text(),
        STANDARD.encode(&publication),
        park_proof_header(&other.key, &device.target(), now_unix(), &[4; 16])
    );
    refuse(wrong_key.as_bytes(), Rejection::HiveBadSignature);
    // 403 a stale proof.
    let stale = format!(
        "CONNECT {} HTTP/1.1\r\nHive-Publication: {}\r\nProxy-Authorization: {}\r\n\r\n",
        device.target_text(),
        STANDARD.encode(&publication),
        park_proof_header(&device.key, &device.target(), now_unix() - 120, &[5; 16])
    );
    refuse(stale.as_bytes(), Rejection::StaleTimestamp);
    // 409 bytes before the 200.
    let mut early = device.park_head(&publication, 6).into_bytes();
    early.extend_from_slice(b"too soon");
    refuse(&early, Rejection::EarlyData);
    // 403 a replayed proof: the first use parks, the second is refused.
    let head = device.park_head(&publication, 7);
    let mut first = connect(&relay);
    first.write_all(head.as_bytes()).unwrap();
    assert_eq!(read_exact_n(&mut first, OK.len()), OK);
    refuse(head.as_bytes(), Rejection::ReplayedNonce);
    // The parked connection is still served.
    let client = reach(&relay, &device);
    exchange(client, b"ping".to_vec(), b"");
    assert_eq!(read_exact_n(&mut first, 4), b"ping");
    // Each refusal was counted under its reason (workers publish counters shortly after).
    for (reason, want) in [
        ("malformed_hive_target", 1),
        ("malformed_proof", 1),
        ("malformed_publication", 2),
        ("publication_mismatch", 1),
        ("hive_bad_signature", 1),
        ("stale_timestamp", 1),
        ("early_data", 1),
        ("replayed_nonce", 1),
    ] {
        let series = format!("tryst_rejections_total{{reason=\"{reason}\"}}");
        assert_eq!(
            relay.await_value(want, |text| series_value(text, &series)),
            want,
            "{series}"
        );
    }
}

/// Asks the relay's STUN responder for `socket`'s reflexive address.
fn stun_mapped(relay: &Relay, socket: &UdpSocket) -> SocketAddr {
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let txid = [socket.local_addr().unwrap().port() as u8; 12];
    socket
        .send_to(
            &binding_request(&txid, Some("hive device"), true),
            relay.stun_addr.expect("started with --stun-listen"),
        )
        .unwrap();
    let mut buf = [0u8; 128];
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    let answer = parse(&buf[..n]).unwrap();
    assert_eq!(answer.transaction_id, txid);
    answer.xor_mapped_address().unwrap()
}

#[test]
fn two_devices_publish_find_each_other_forward_then_stream() {
    let relay = start();
    let (alice, bob) = (Device::new(0x0a), Device::new(0x0b));

    // 1. Each device learns its server-reflexive candidate from the STUN responder.
    let (udp_a, udp_b) = (
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    );
    let (mapped_a, mapped_b) = (stun_mapped(&relay, &udp_a), stun_mapped(&relay, &udp_b));
    assert_eq!(mapped_a, udp_a.local_addr().unwrap());
    assert_eq!(mapped_b, udp_b.local_addr().unwrap());
    let candidate = |addr: SocketAddr| {
        vec![Candidate {
            kind: "stunReflexive".into(),
            host: addr.ip().to_string(),
            port: addr.port(),
            priority: 100,
        }]
    };

    // 2. Both publish.
    let pub_a = alice.publication(candidate(mapped_a));
    let pub_b = bob.publication(candidate(mapped_b));
    assert_eq!(http(&relay, "POST", "/v1/rendezvous", None, &pub_a).0, 200);
    assert_eq!(http(&relay, "POST", "/v1/rendezvous", None, &pub_b).0, 200);

    // 3. Each finds the other, exactly as signed, and re-verifies it.
    let ws = format_uuid(&WS);
    let (status, found_b) = http(
        &relay,
        "GET",
        &format!("/v1/rendezvous/{ws}/{}", format_uuid(&bob.id)),
        None,
        b"",
    );
    assert_eq!((status, &found_b), (200, &pub_b));
    let (status, found_a) = http(
        &relay,
        "GET",
        &format!("/v1/rendezvous/{ws}/{}", format_uuid(&alice.id)),
        None,
        b"",
    );
    assert_eq!((status, &found_a), (200, &pub_a));
    let now_i = i64::try_from(now_unix()).unwrap();
    let seen_b = verify_publication(&found_b, now_i, &PublicationPolicy::default()).unwrap();
    assert_eq!(seen_b.signing_key, bob.key.verifying_key().to_bytes());
    let seen_a = verify_publication(&found_a, now_i, &PublicationPolicy::default()).unwrap();
    assert_eq!(seen_a.signing_key, alice.key.verifying_key().to_bytes());
    let text = String::from_utf8(found_b).unwrap();
    assert!(
        text.contains(&format!("\"port\":{}", mapped_b.port())),
        "{text}"
    );
    let (status, all) = http(&relay, "GET", &format!("/v1/rendezvous/{ws}"), None, b"");
    assert_eq!(status, 200);
    assert!(all.windows(pub_a.len()).any(|w| w == pub_a));
    assert!(all.windows(pub_b.len()).any(|w| w == pub_b));

    // 4. Direct UDP is assumed to fail: frames go through /v1/forward, drained with the
    //    Hive-Drain proof by the recipient's publication key.
    let hello = b"\x00\x00\x00\x05hello".to_vec();
    assert_eq!(
        http(&relay, "POST", &bob.forward_path(), None, &hello).0,
        200
    );
    let (status, got) = http(
        &relay,
        "GET",
        &bob.forward_path(),
        Some(&bob.drain_auth(1)),
        b"",
    );
    assert_eq!((status, got), (200, hello));
    // Alice cannot drain Bob's mailbox with her own key.
    assert_eq!(http(&relay, "POST", &bob.forward_path(), None, b"x").0, 200);
    let forged = alice.drain_auth_for(&bob, 2);
    assert_eq!(
        http(&relay, "GET", &bob.forward_path(), Some(&forged), b"").0,
        401
    );
    let ack = b"\x00\x00\x00\x03ack".to_vec();
    assert_eq!(
        http(&relay, "POST", &alice.forward_path(), None, &ack).0,
        200
    );
    let (status, got) = http(
        &relay,
        "GET",
        &alice.forward_path(),
        Some(&alice.drain_auth(4)),
        b"",
    );
    assert_eq!((status, got), (200, ack));

    // 5. Then a streaming tunnel: Bob parks under his device with his publication and a
    //    proof by the same key; Alice reaches him; frames flow both ways, in order.
    let parked = park(&relay, &bob, &pub_b, 9);
    let tunnel = reach(&relay, &bob);
    let from_alice: Vec<u8> = (0..64u8).flat_map(|i| [0, 0, 0, 1, i]).collect();
    let from_bob: Vec<u8> = (0..64u8).flat_map(|i| [0, 0, 0, 1, 255 - i]).collect();
    let (fa, fb) = (from_alice.clone(), from_bob.clone());
    let bob_side = thread::spawn(move || exchange(parked, fb, &fa));
    exchange(tunnel, from_alice, &from_bob);
    bob_side.join().unwrap();
}

/// Issue 12 item 2: Hive park and drain proofs accepted before a restart are refused
/// after it, each with its family's replay answer.
#[test]
fn hive_park_and_drain_proofs_accepted_before_a_restart_are_refused_after_it() {
    let relay = start();
    let device = Device::new(5);
    let publication = device.publication(Vec::new());
    let park_head = device.park_head(&publication, 21);
    let mut parked = connect(&relay);
    parked.write_all(park_head.as_bytes()).unwrap();
    assert_eq!(read_exact_n(&mut parked, OK.len()), OK);
    let frame = b"\x00\x00\x00\x02hi".to_vec();
    let post_frame = |relay: &Relay| {
        assert_eq!(
            http(relay, "POST", "/v1/rendezvous", None, &publication).0,
            200
        );
        assert_eq!(
            http(relay, "POST", &device.forward_path(), None, &frame).0,
            200
        );
    };
    post_frame(&relay);
    let drain = device.drain_auth(22);
    let got = http(&relay, "GET", &device.forward_path(), Some(&drain), b"");
    assert_eq!(got, (200, frame.clone()));
    let relay = relay.restart(&FLAGS);
    post_frame(&relay);
    let got = http(&relay, "GET", &device.forward_path(), Some(&drain), b"");
    assert_eq!(
        (got.0, String::from_utf8_lossy(&got.1).into_owned()),
        (401, r#"{"error":"drain proof replayed"}"#.to_owned())
    );
    let mut s = connect(&relay);
    s.write_all(park_head.as_bytes()).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read_to_close(&mut s)),
        String::from_utf8_lossy(&Rejection::ReplayedNonce.response())
    );
    // Proofs made now are accepted: the frame is still there for them.
    let got = http(
        &relay,
        "GET",
        &device.forward_path(),
        Some(&device.drain_auth(23)),
        b"",
    );
    assert_eq!(got, (200, frame));
    park(&relay, &device, &publication, 24);
}

/// Issue 12 item 9: `--proof-window` governs the Hive park and drain proofs (it was a
/// fixed 60 s), and their parameter names are case-sensitive (lower case only).
#[test]
fn hive_proofs_honour_the_proof_window_and_lower_case_names() {
    let mut flags = FLAGS.to_vec();
    flags.extend(["--proof-window", "5s"]);
    let relay = Relay::start(&flags);
    let device = Device::new(6);
    let publication = device.publication(Vec::new());
    assert_eq!(
        http(&relay, "POST", "/v1/rendezvous", None, &publication).0,
        200
    );
    let frame = b"\x00\x00\x00\x01!".to_vec();
    assert_eq!(
        http(&relay, "POST", &device.forward_path(), None, &frame).0,
        200
    );
    let refused = |ts: u64, nonce: u8| {
        let auth = device.drain_auth_at(&device, nonce, ts);
        let (status, body) = http(&relay, "GET", &device.forward_path(), Some(&auth), b"");
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    let out_of_window = (
        401,
        r#"{"error":"drain proof: ts out of window"}"#.to_owned(),
    );
    assert_eq!(refused(now_unix() - 10, 1), out_of_window);
    assert_eq!(refused(now_unix() + 10, 2), out_of_window);
    let upper = device
        .drain_auth(3)
        .replace("ts=", "TS=")
        .replace("nonce=", "NONCE=")
        .replace("sig=", "SIG=");
    let (status, body) = http(&relay, "GET", &device.forward_path(), Some(&upper), b"");
    assert_eq!(
        (status, String::from_utf8_lossy(&body).into_owned()),
        (
            401,
            r#"{"error":"drain proof: malformed parameter"}"#.to_owned()
        )
    );
    let got = http(
        &relay,
        "GET",
        &device.forward_path(),
        Some(&device.drain_auth(4)),
        b"",
    );
    assert_eq!(got, (200, frame));
    // The park proof: 10 s old is stale under a 5 s window; upper-case names are malformed.
    let refuse = |head: String, want: Rejection| {
        let mut s = connect(&relay);
        s.write_all(head.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&read_to_close(&mut s)),
            String::from_utf8_lossy(&want.response()),
            "{want:?}"
        );
    };
    refuse(
        device.park_head_at(&publication, 5, now_unix() - 10),
        Rejection::StaleTimestamp,
    );
    refuse(
        device
            .park_head(&publication, 6)
            .replace("ts=", "TS=")
            .replace("nonce=", "NONCE="),
        Rejection::MalformedProof,
    );
    park(&relay, &device, &publication, 7);
}

/// For the cluster tests: a device parked (streaming fallback) on `park_on` and a
/// client's reach of it from `reach_from`, both past their 200; a device key of its own
/// per `n`.
pub(crate) fn park_and_reach_across(
    park_on: &Relay,
    reach_from: &Relay,
    n: u8,
) -> (TcpStream, TcpStream) {
    let device = Device::new(n);
    let publication = device.publication(Vec::new());
    let parked = park(park_on, &device, &publication, n);
    (parked, reach(reach_from, &device))
}
