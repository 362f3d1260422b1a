//! End-to-end tests of the `tag:` family (Qredo-style tag rendezvous) over loopback:
//! publishers park with Ed25519 ownership proofs, responders connect by hashed tag.
//!
//! Waiting is on events only: a read returning (200, a frame, EOF), a thread joining.

use crate::relay::Relay;
use crate::tunnel::{OK, now_unix, read_exact_n, read_to_close, status_and_code};
use ed25519_dalek::SigningKey;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
// Publisher-side builders come from tryst-client (what agents use); the responder-side
// checks (identity key, answer verification) from the relay.
use tryst_client::tag::{self as publisher, CreateOptions, HashedTag, TagMode, hashed_tag};
use tryst_relay::tag::wire;

fn nonce() -> Vec<u8> {
    (0..16).map(|_| rand::random::<u8>()).collect()
}

/// Parks a publisher connection for `tag`, signed with `key`, and reads its 200.
fn park_with(
    relay: &Relay,
    tag: &HashedTag,
    key: &SigningKey,
    options: &CreateOptions,
) -> TcpStream {
    let mut s = relay.connect();
    let head = publisher::park_request(tag, key, now_unix(), &nonce(), options);
    s.write_all(head.as_bytes()).unwrap();
    assert_eq!(read_exact_n(&mut s, OK.len()), OK, "park refused");
    s
}

fn park(relay: &Relay, tag: &HashedTag, options: &CreateOptions) -> TcpStream {
    park_with(relay, tag, &tag.derived_signing_key(), options)
}

/// Sends a park and returns the whole refusal.
fn park_refused(relay: &Relay, tag: &HashedTag, options: &CreateOptions) -> String {
    let head = publisher::park_request(
        tag,
        &tag.derived_signing_key(),
        now_unix(),
        &nonce(),
        options,
    );
    relay.exchange(head.as_bytes())
}

fn respond_head(tag: &HashedTag, challenge: Option<&[u8]>) -> String {
    match challenge {
        None => format!("CONNECT {} HTTP/1.1\r\n\r\n", tag.target()),
        Some(c) => format!(
            "CONNECT {} HTTP/1.1\r\nTag-Challenge: {}\r\n\r\n",
            tag.target(),
            hex::encode(c)
        ),
    }
}

/// Reads the responder hello frame a publisher connection receives at pairing.
fn read_hello(s: &mut TcpStream) -> Vec<u8> {
    let head = read_exact_n(s, 10);
    assert_eq!(&head[..9], b"TAGHELLO\x01", "{head:?}");
    let challenge = read_exact_n(s, usize::from(head[9]));
    let mut frame = head;
    frame.extend_from_slice(&challenge);
    assert_eq!(
        publisher::parse_hello(&frame),
        Ok((challenge.clone(), frame.len()))
    );
    challenge
}

#[test]
fn challenge_exchange_end_to_end_with_an_authenticated_tag() {
    let relay = Relay::start(&[]);
    // The publisher's identity key is named in the tag itself ("prefix@<key>").
    let identity = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let tag_text = format!("shop@{}", {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(identity.verifying_key().as_bytes())
    });
    let tag = hashed_tag("com.example", &tag_text);
    let mut publisher = park(&relay, &tag, &CreateOptions::default());
    let publisher_thread = std::thread::spawn(move || {
        let challenge = read_hello(&mut publisher);
        publisher
            .write_all(&publisher::answer_frame(&identity, &tag, &challenge))
            .unwrap();
        // Then echo.
        let mut buf = [0u8; 4096];
        loop {
            match publisher.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => publisher.write_all(&buf[..n]).unwrap(),
            }
        }
    });

    // The responder knows the tag, so it knows the key to check the answer against.
    let key = wire::tag_identity_key(&tag_text).unwrap();
    let challenge: [u8; 32] = rand::random();
    let mut responder = relay.connect();
    let mut request = respond_head(&tag, Some(&challenge)).into_bytes();
    request.extend_from_slice(b"early|");
    responder.write_all(&request).unwrap();
    assert_eq!(read_exact_n(&mut responder, OK.len()), OK);
    let answer = read_exact_n(&mut responder, publisher::ANSWER_LEN);
    assert!(wire::verify_answer(&key, &tag, &challenge, &answer));
    assert!(!wire::verify_answer(&key, &tag, &[0; 32], &answer));
    // The early bytes come after the hello; the echo brings them back first.
    responder.write_all(b"late").unwrap();
    assert_eq!(read_exact_n(&mut responder, 10), b"early|late");
    responder.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut responder), "");
    publisher_thread.join().unwrap();
}

#[test]
fn single_shot_race_has_exactly_one_winner_and_the_tag_is_gone_after() {
    let relay = Relay::start(&[]);
    let tag = hashed_tag("", &hex::encode(rand::random::<[u8; 16]>()));
    let single = CreateOptions {
        mode: Some(TagMode::SingleShot),
        ..CreateOptions::default()
    };
    let mut publisher = park(&relay, &tag, &single);
    let barrier = Arc::new(Barrier::new(2));
    let addr = relay.addr;
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            let request = respond_head(&tag, None);
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
                    .unwrap();
                barrier.wait();
                s.write_all(request.as_bytes()).unwrap();
                let mut first = vec![0u8; OK.len()];
                s.read_exact(&mut first).unwrap();
                if first == OK {
                    s.write_all(b"winner").unwrap();
                    (true, s)
                } else {
                    let mut rest = String::from_utf8_lossy(&first).into_owned();
                    rest.push_str(&read_to_close(&mut s));
                    assert_eq!(
                        status_and_code(&rest),
                        (404, "unknown_tag".into()),
                        "{rest}"
                    );
                    (false, s)
                }
            })
        })
        .collect();
    let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|(won, _)| *won).count(), 1);
    assert_eq!(read_hello(&mut publisher), b"");
    assert_eq!(read_exact_n(&mut publisher, 6), b"winner");
    // Un-published: later responders are 404 at once.
    let late = relay.exchange(respond_head(&tag, None).as_bytes());
    assert_eq!(status_and_code(&late), (404, "unknown_tag".into()));
    // A park within the publisher grace (the client wait, 1 s rounded up) is accepted and
    // then closed by the relay when the grace ends; after that parks are 410.
    let mut grace = park(&relay, &tag, &CreateOptions::default());
    assert_eq!(read_to_close(&mut grace), "", "closed when the grace ended");
    let gone = park_refused(&relay, &tag, &CreateOptions::default());
    assert_eq!(status_and_code(&gone), (410, "tag_gone".into()), "{gone}");
}

#[test]
fn long_term_tag_serves_twenty_responders_each_with_its_own_tunnel() {
    const N: usize = 20;
    let relay = Relay::start(&["--max-parked-per-id", "32"]);
    let tag = hashed_tag("app", "billboard on Rte.101");
    let long = CreateOptions {
        mode: Some(TagMode::LongTerm),
        duration_secs: Some(3600),
        ..CreateOptions::default()
    };
    let publishers: Vec<_> = (0..N)
        .map(|_| {
            let mut s = park(&relay, &tag, &long);
            std::thread::spawn(move || {
                assert_eq!(read_hello(&mut s), b"");
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => s.write_all(&buf[..n]).unwrap(),
                    }
                }
            })
        })
        .collect();
    assert_eq!(relay.await_metric("tryst_parked", N as u64), N as u64);
    let addr = relay.addr;
    let request = respond_head(&tag, None);
    let responders: Vec<_> = (0..N)
        .map(|i| {
            let request = request.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
                    .unwrap();
                s.write_all(request.as_bytes()).unwrap();
                assert_eq!(read_exact_n(&mut s, OK.len()), OK);
                let payload: Vec<u8> = (0..50_000u32)
                    .map(|j| (j as u8).wrapping_mul(7).wrapping_add(i as u8))
                    .collect();
                let writer = {
                    let mut s = s.try_clone().unwrap();
                    let payload = payload.clone();
                    std::thread::spawn(move || s.write_all(&payload).unwrap())
                };
                let echoed = read_exact_n(&mut s, payload.len());
                writer.join().unwrap();
                assert!(echoed == payload, "responder {i}: echo differs");
            })
        })
        .collect();
    for r in responders {
        r.join().unwrap();
    }
    assert_eq!(relay.metric("tryst_paired_total"), N as u64);
    drop(publishers);
    // The tag stays published for the next responder (the publisher parks again).
    let again = park(&relay, &tag, &CreateOptions::default());
    let mut r = relay.connect();
    r.write_all(request.as_bytes()).unwrap();
    assert_eq!(read_exact_n(&mut r, OK.len()), OK);
    drop(again);
}

#[test]
fn expired_tag_closes_its_parked_connections_and_refuses_both_roles() {
    let relay = Relay::start(&[]);
    let tag = hashed_tag("", &hex::encode(rand::random::<[u8; 16]>()));
    let short = CreateOptions {
        duration_secs: Some(1),
        ..CreateOptions::default()
    };
    let mut publisher = park(&relay, &tag, &short);
    // The relay closes the parked connection when the tag expires (the event we wait on).
    assert_eq!(read_to_close(&mut publisher), "");
    let response = relay.exchange(respond_head(&tag, None).as_bytes());
    assert_eq!(
        status_and_code(&response),
        (404, "unknown_tag".into()),
        "{response}"
    );
    let gone = park_refused(&relay, &tag, &short);
    assert_eq!(status_and_code(&gone), (410, "tag_gone".into()), "{gone}");
}

#[test]
fn ownership_proofs_are_checked_over_the_wire() {
    let relay = Relay::start(&[]);
    let tag = hashed_tag("", "proofs over the wire");
    let owner = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let registered = CreateOptions {
        owner_key: Some(owner.verifying_key()),
        ..CreateOptions::default()
    };
    let _first = park_with(&relay, &tag, &owner, &registered);
    // The derived key is not the owner any more.
    let refused = park_refused(&relay, &tag, &CreateOptions::default());
    assert_eq!(
        status_and_code(&refused),
        (403, "bad_proof".into()),
        "{refused}"
    );
    // Re-registering another key.
    let other = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let head = publisher::park_request(
        &tag,
        &other,
        now_unix(),
        &nonce(),
        &CreateOptions {
            owner_key: Some(other.verifying_key()),
            ..CreateOptions::default()
        },
    );
    let refused = relay.exchange(head.as_bytes());
    assert_eq!(
        status_and_code(&refused),
        (403, "owner_key_mismatch".into())
    );
    // A replayed park.
    let head = publisher::park_request(
        &tag,
        &owner,
        now_unix(),
        &nonce(),
        &CreateOptions::default(),
    );
    let mut ok = relay.connect();
    ok.write_all(head.as_bytes()).unwrap();
    assert_eq!(read_exact_n(&mut ok, OK.len()), OK);
    let replayed = relay.exchange(head.as_bytes());
    assert_eq!(status_and_code(&replayed), (403, "replayed_nonce".into()));
    let malformed = relay.exchange(
        format!(
            "CONNECT {} HTTP/1.1\r\nProxy-Authorization: Tag x\r\n\r\n",
            tag.target()
        )
        .as_bytes(),
    );
    assert_eq!(status_and_code(&malformed), (400, "malformed_proof".into()));
    let bad_target = relay.exchange(b"CONNECT tag:1234 HTTP/1.1\r\n\r\n");
    assert_eq!(status_and_code(&bad_target), (400, "malformed_tag".into()));
    assert!(
        relay
            .metrics()
            .contains("tryst_rejections_total{reason=\"owner_key_mismatch\"} 1")
    );
}

#[test]
fn tag_command_prints_the_hashed_tag_owner_key_and_target() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tryst"))
            .arg("tag")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // Vectors computed independently with python3 (see tag::kdf's tests and
    // docs/compat/qredo.md).
    assert_eq!(
        run(&["hello"]),
        "hashed tag   b361493fec41a15b1debb72c3012259bfe40f02420a1a570a70faf6ab8c6e3a7\n\
         owner key    heiJX9W0pfL0TKvsC3vw2Ru7n4OjlMnLCrZ0ygii6zU (Ed25519, derived: seed = hashed tag; hex 85e8895fd5b4a5f2f44cabec0b7bf0d91bbb9f83a394c9cb0ab674ca08a2eb35)\n\
         target       CONNECT tag:b361493fec41a15b1debb72c3012259bfe40f02420a1a570a70faf6ab8c6e3a7 HTTP/1.1\n"
    );
    let with_app = run(&["a1b2c3d4e5f60718", "--app-id", "com.example.chat"]);
    assert!(
        with_app.starts_with(
            "hashed tag   7e86d28fc7b3ad46b71ab964a45d4dc21e3d01101daf3837a2ea693b409bc8f2\n\
             owner key    ljFGbHhiZQ2PzvRPKaEh9Wtcp_jglQ2k4fkC10Bb-Y0 "
        ),
        "{with_app}"
    );
    let unicode = run(&["caf\u{e9} \u{2615} \u{65e5}\u{672c}"]);
    assert!(
        unicode.starts_with(
            "hashed tag   67f32dd318c911785216bf5b5dc3ea841e87561c5d8828c7a4c1ed2e4af5bdca\n"
        ),
        "{unicode}"
    );
}

/// Issue 12 item 2: a tag park proof accepted before a restart is refused after it with
/// `replayed_nonce` (the tag table and its nonces are in the workers' memory).
#[test]
fn a_tag_park_proof_accepted_before_a_restart_is_refused_after_it() {
    let relay = Relay::start(&[]);
    let tag = hashed_tag("", &hex::encode(rand::random::<[u8; 16]>()));
    let options = CreateOptions::default();
    let head = wire::park_request(
        &tag,
        &tag.derived_signing_key(),
        now_unix(),
        &nonce(),
        &options,
    );
    let mut parked = relay.connect();
    parked.write_all(head.as_bytes()).unwrap();
    assert_eq!(read_exact_n(&mut parked, OK.len()), OK);
    let relay = relay.restart(&[]);
    let refusal = relay.exchange(head.as_bytes());
    assert_eq!(
        status_and_code(&refusal),
        (403, "replayed_nonce".into()),
        "{refusal}"
    );
    // A proof made now parks (the tag is created again).
    park(&relay, &tag, &options);
}

/// For the cluster tests: a long-term tag published (parked) on `park_on` and a
/// responder's reach of it from `reach_from` with a challenge; returns the publisher's
/// and the responder's sockets past the hello frame and the 200.
pub(crate) fn publish_and_respond_across(
    park_on: &Relay,
    reach_from: &Relay,
    name: &str,
) -> (TcpStream, TcpStream) {
    let tag = hashed_tag("app", name);
    let long = CreateOptions {
        mode: Some(TagMode::LongTerm),
        duration_secs: Some(600),
        ..CreateOptions::default()
    };
    let mut publisher = park(park_on, &tag, &long);
    let mut responder = reach_from.connect();
    responder
        .write_all(respond_head(&tag, Some(b"cluster challenge")).as_bytes())
        .unwrap();
    assert_eq!(read_exact_n(&mut responder, OK.len()), OK);
    assert_eq!(read_hello(&mut publisher), b"cluster challenge");
    (publisher, responder)
}

/// A responder's request for a tag nobody published, and the exact refusal a relay
/// answers to it.
pub(crate) fn unknown_tag_request() -> (String, String) {
    let tag = hashed_tag("app", "published nowhere");
    (
        respond_head(&tag, None),
        String::from_utf8(tryst_engine::reject::Rejection::UnknownTag.response()).unwrap(),
    )
}
