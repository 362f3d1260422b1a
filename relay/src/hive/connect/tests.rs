use super::*;
use crate::hive::record::{Candidate, Record, format_rfc3339_utc, format_uuid};
use crate::hive::verify::sign_publication;
use ed25519_dalek::SigningKey;
use tryst_engine::head::{HeadLimits, HeadStatus, parse_head};
use tryst_engine::target::{KeySpace, RendezvousKey};

const NOW: u64 = 1_800_000_000;
const WS: [u8; 16] = [0x1a; 16];
const DEV: [u8; 16] = [0x2b; 16];

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn target() -> HiveTarget {
    HiveTarget {
        workspace: WS,
        device: DEV,
    }
}

/// A publication of `device` in `ws`, signed by `key(n)`, dated `NOW + offset`.
fn publication_of(ws: [u8; 16], device: [u8; 16], n: u8, offset: i64, ttl: u32) -> Vec<u8> {
    let record = Record {
        workspace: ws,
        account: [0x3c; 16],
        device,
        signing_key: [0; 32],
        candidates: vec![Candidate {
            kind: "hostLocal".into(),
            host: "192.0.2.7".into(),
            port: 4000,
            priority: 1,
        }],
        published_at: format_rfc3339_utc(NOW as i64 + offset),
        ttl_seconds: ttl,
    };
    sign_publication(&key(n), &record)
}

fn publication() -> Vec<u8> {
    publication_of(WS, DEV, 1, -10, 90)
}

fn target_text() -> String {
    format!("hive:{}/{}", format_uuid(&WS), format_uuid(&DEV))
}

fn head(text: &str) -> RequestHead {
    match parse_head(text.as_bytes(), &HeadLimits::default()) {
        Ok(HeadStatus::Complete(h)) => h,
        other => panic!("not a complete head: {other:?}"),
    }
}

fn park_head(publication: &[u8], proof: &str) -> RequestHead {
    head(&format!(
        "CONNECT {} HTTP/1.1\r\nHive-Publication: {}\r\nProxy-Authorization: {proof}\r\n\r\n",
        target_text(),
        STANDARD.encode(publication)
    ))
}

fn proof(n: u8, ts: u64, nonce: u8) -> String {
    park_proof_header(&key(n), &target(), ts, &[nonce; 16])
}

fn route(family: &mut HiveConnect, h: &RequestHead) -> Route {
    family.route(h, b"", NOW, Transport::Plain)
}

fn refused(family: &mut HiveConnect, h: &RequestHead) -> Rejection {
    match route(family, h) {
        Route::Reject(r) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn key_of_target() -> RendezvousKey {
    let mut data = [0u8; 32];
    data[..16].copy_from_slice(&WS);
    data[16..].copy_from_slice(&DEV);
    RendezvousKey::derived(KeySpace::Hive, &data)
}

#[test]
fn targets() {
    let t = parse_target(&target_text()).unwrap();
    assert_eq!(t, target());
    assert_eq!(t.key(), key_of_target());
    let upper = format!(
        "HIVE:{}/{}",
        format_uuid(&WS).to_uppercase(),
        format_uuid(&DEV).to_uppercase()
    );
    assert_eq!(parse_target(&upper).unwrap().key(), key_of_target());
    let ws = format_uuid(&WS);
    let dev = format_uuid(&DEV);
    for bad in [
        "hive:".to_owned(),
        format!("hive:{ws}"),
        format!("hive:{ws}/"),
        format!("hive:/{dev}"),
        format!("hive:{ws}/{dev}/"),
        format!("hive:{ws}/{dev}/x"),
        format!("hive:{ws}//{dev}"),
        format!("hive: {ws}/{dev}"),
        format!("hive:{{{ws}}}/{dev}"),
        format!("hive:{}/{dev}", ws.replace('-', "")),
        format!("hive:urn:uuid:{ws}/{dev}"),
        format!("hive:{ws}/{dev}?x=1"),
        format!("uuid:{ws}/{dev}"),
        "hiv".to_owned(),
    ] {
        assert_eq!(
            parse_target(&bad),
            Err(Rejection::MalformedHiveTarget),
            "{bad}"
        );
    }
    // The workspace and device order matters; the key space keeps hive apart from uuid.
    let swapped = format!("hive:{dev}/{ws}");
    assert_ne!(parse_target(&swapped).unwrap().key(), key_of_target());
    assert_ne!(
        key_of_target(),
        RendezvousKey::uuid(*key_of_target().bytes())
    );
}

#[test]
fn park_and_reach() {
    let mut f = HiveConnect::default();
    let h = park_head(&publication(), &proof(1, NOW, 1));
    assert_eq!(
        f.classify(&h, Transport::Plain),
        Ok(Classified::Rendezvous(key_of_target()))
    );
    assert_eq!(route(&mut f, &h), Route::park(key_of_target()));
    // A reach carries no proof; its early bytes are payload.
    let reach = head(&format!(
        "CONNECT {} HTTP/1.1\r\nHost: r\r\n\r\n",
        target_text()
    ));
    assert_eq!(
        f.route(&reach, b"hello", NOW, Transport::Tls),
        Route::reach(key_of_target())
    );
    // Window edges are inclusive.
    let h = park_head(&publication(), &proof(1, NOW - 60, 2));
    assert_eq!(route(&mut f, &h), Route::park(key_of_target()));
    let h = park_head(&publication(), &proof(1, NOW + 60, 3));
    assert_eq!(route(&mut f, &h), Route::park(key_of_target()));
}

#[test]
fn every_refusal() {
    let mut f = HiveConnect::default();
    let good_proof = proof(1, NOW, 9);
    // 400 malformed target (both on the accepting and the owner worker).
    let h = head("CONNECT hive:nope HTTP/1.1\r\n\r\n");
    assert_eq!(
        f.classify(&h, Transport::Plain),
        Err(Rejection::MalformedHiveTarget)
    );
    assert_eq!(refused(&mut f, &h), Rejection::MalformedHiveTarget);
    // 400 malformed proof: duplicate header, wrong scheme, bad fields, not UTF-8.
    let h = head(&format!(
        "CONNECT {} HTTP/1.1\r\nHive-Publication: {}\r\nProxy-Authorization: {good_proof}\r\nProxy-Authorization: {good_proof}\r\n\r\n",
        target_text(),
        STANDARD.encode(publication())
    ));
    assert_eq!(refused(&mut f, &h), Rejection::MalformedProof);
    for bad in [
        good_proof.replacen("Hive ", "Hive-Drain ", 1),
        good_proof.replacen("Hive ", "Tryst ", 1),
        format!("Hive ts={NOW}, nonce=00"),
        format!("Hive ts=x, nonce={}, sig=AAAA", "00".repeat(16)),
    ] {
        let h = park_head(&publication(), &bad);
        assert_eq!(refused(&mut f, &h), Rejection::MalformedProof, "{bad}");
    }
    assert_eq!(
        parse_park_proof(b"Hive ts=1, \xff"),
        Err(Rejection::MalformedProof)
    );
    // 400 malformed publication: missing, duplicated, not base64, bad JSON, bad
    // publication signature, out of skew, expired.
    let h = head(&format!(
        "CONNECT {} HTTP/1.1\r\nProxy-Authorization: {good_proof}\r\n\r\n",
        target_text()
    ));
    assert_eq!(refused(&mut f, &h), Rejection::MalformedPublication);
    let b64 = STANDARD.encode(publication());
    let h = head(&format!(
        "CONNECT {} HTTP/1.1\r\nHive-Publication: {b64}\r\nhive-publication: {b64}\r\nProxy-Authorization: {good_proof}\r\n\r\n",
        target_text()
    ));
    assert_eq!(refused(&mut f, &h), Rejection::MalformedPublication);
    let (a, b) = b64.split_at(40);
    for bad in [
        format!("{b64}A"),
        format!("{a} {b}"),
        b64.replace('+', "-").replace('/', "_"),
        b64[..b64.len() - 4].to_owned(),
    ] {
        if bad == b64 {
            continue;
        }
        let h = head(&format!(
            "CONNECT {} HTTP/1.1\r\nHive-Publication: {bad}\r\nProxy-Authorization: {good_proof}\r\n\r\n",
            target_text(),
        ));
        assert_eq!(
            refused(&mut f, &h),
            Rejection::MalformedPublication,
            "{bad}"
        );
    }
    let mut tampered = publication();
    let at = tampered.windows(4).position(|w| w == b"4000").unwrap();
    tampered[at] = b'5';
    for body in [
        b"{}".to_vec(),
        tampered,
        publication_of(WS, DEV, 1, -301, 90),
        publication_of(WS, DEV, 1, 301, 90),
        publication_of(WS, DEV, 1, -100, 90), // fresh until NOW - 10
        publication_of(WS, DEV, 1, -90, 90),  // expiry is exclusive
    ] {
        let h = park_head(&body, &good_proof);
        assert_eq!(refused(&mut f, &h), Rejection::MalformedPublication);
    }
    // 403 another device's (or workspace's) valid publication.
    for body in [
        publication_of(WS, [0x4d; 16], 1, 0, 90),
        publication_of([0x5e; 16], DEV, 1, 0, 90),
    ] {
        let h = park_head(&body, &good_proof);
        assert_eq!(refused(&mut f, &h), Rejection::PublicationMismatch);
    }
    // 403 stale proof.
    for ts in [NOW - 61, NOW + 61, 0, 9_999_999_999_999_999_999] {
        let h = park_head(&publication(), &proof(1, ts, 9));
        assert_eq!(refused(&mut f, &h), Rejection::StaleTimestamp, "{ts}");
    }
    // More than 19 digits of ts is a malformed proof (the shared Hive proof grammar).
    let h = park_head(&publication(), &proof(1, u64::MAX, 9));
    assert_eq!(refused(&mut f, &h), Rejection::MalformedProof);
    // 401 a signature by another key, or over another target.
    let h = park_head(&publication(), &proof(2, NOW, 9));
    assert_eq!(refused(&mut f, &h), Rejection::HiveBadSignature);
    let other = HiveTarget {
        workspace: WS,
        device: [0x4d; 16],
    };
    let h = park_head(
        &publication(),
        &park_proof_header(&key(1), &other, NOW, &[9; 16]),
    );
    assert_eq!(refused(&mut f, &h), Rejection::HiveBadSignature);
    // None of the refusals above consumed the nonce.
    let h = park_head(&publication(), &good_proof);
    assert_eq!(route(&mut f, &h), Route::park(key_of_target()));
    // 403 replay (also from a later second within the window).
    assert_eq!(refused(&mut f, &h), Rejection::ReplayedNonce);
    assert_eq!(
        f.route(&h, b"", NOW + 30, Transport::Plain),
        Route::Reject(Rejection::ReplayedNonce)
    );
    // 409 early data from the parking device.
    let h = park_head(&publication(), &proof(1, NOW, 10));
    assert_eq!(
        f.route(&h, b"x", NOW, Transport::Plain),
        Route::Reject(Rejection::EarlyData)
    );
}

#[test]
fn full_replay_cache_refuses_rather_than_forgets() {
    let mut f = HiveConnect::new(HiveConnectConfig {
        replay_capacity: 1,
        ..HiveConnectConfig::default()
    });
    let h = park_head(&publication(), &proof(1, NOW, 1));
    assert_eq!(route(&mut f, &h), Route::park(key_of_target()));
    let h2 = park_head(&publication(), &proof(1, NOW, 2));
    assert_eq!(refused(&mut f, &h2), Rejection::ReplayCacheFull);
    // Once the first nonce can no longer pass the window, its slot is free again.
    let later = NOW + 2 * PROOF_WINDOW_SECS + 1;
    let pubn = publication_of(WS, DEV, 1, 2 * PROOF_WINDOW_SECS as i64, 90);
    let h3 = park_head(&pubn, &proof(1, later, 2));
    assert_eq!(
        f.route(&h3, b"", later, Transport::Plain),
        Route::park(key_of_target())
    );
}

#[test]
fn the_max_ttl_policy_applies() {
    let mut f = HiveConnect::new(HiveConnectConfig {
        policy: PublicationPolicy {
            max_ttl_secs: 5,
            ..PublicationPolicy::default()
        },
        ..HiveConnectConfig::default()
    });
    // Published 10 s ago with ttl 90, but the relay caps the TTL at 5 s: expired.
    let h = park_head(&publication(), &proof(1, NOW, 1));
    assert_eq!(refused(&mut f, &h), Rejection::MalformedPublication);
}

/// The exact bytes a refused park receives, for each status the family uses.
#[test]
fn exact_responses() {
    let cases = [
        (
            Rejection::MalformedHiveTarget,
            "400 Bad Request",
            r#"{"error":{"code":"malformed_hive_target","message":"malformed hive target (expected hive:<workspace-uuid>/<device-uuid>)"}}"#,
            "",
        ),
        (
            Rejection::MalformedPublication,
            "400 Bad Request",
            r#"{"error":{"code":"malformed_publication","message":"publication missing, malformed, unverifiable or expired"}}"#,
            "",
        ),
        (
            Rejection::HiveBadSignature,
            "401 Unauthorized",
            r#"{"error":{"code":"hive_bad_signature","message":"hive proof signature does not verify"}}"#,
            "WWW-Authenticate: Hive\r\n",
        ),
        (
            Rejection::PublicationMismatch,
            "403 Forbidden",
            r#"{"error":{"code":"publication_mismatch","message":"publication is for another workspace or device"}}"#,
            "",
        ),
        (
            Rejection::StaleTimestamp,
            "403 Forbidden",
            r#"{"error":{"code":"stale_timestamp","message":"timestamp outside the accepted window"}}"#,
            "",
        ),
        (
            Rejection::ReplayedNonce,
            "403 Forbidden",
            r#"{"error":{"code":"replayed_nonce","message":"nonce already used"}}"#,
            "",
        ),
        (
            Rejection::EarlyData,
            "409 Conflict",
            r#"{"error":{"code":"early_data","message":"bytes sent before the 200"}}"#,
            "",
        ),
        (
            Rejection::ReplayCacheFull,
            "503 Service Unavailable",
            r#"{"error":{"code":"replay_cache_full","message":"replay cache full"}}"#,
            "Retry-After: 1\r\n",
        ),
    ];
    for (rejection, status, body, extra) in cases {
        let want = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            body.len()
        );
        assert_eq!(
            String::from_utf8(rejection.response()).unwrap(),
            want,
            "{rejection:?}"
        );
    }
}

#[test]
fn the_largest_publication_fits_the_engine_head_limit() {
    use crate::hive::record::MAX_PUBLICATION_BYTES;
    let encoded = STANDARD.encode(vec![0u8; MAX_PUBLICATION_BYTES]);
    assert_eq!(encoded.len(), 10_924);
    let text = format!(
        "CONNECT {} HTTP/1.1\r\nHive-Publication: {encoded}\r\nProxy-Authorization: {}\r\n\r\n",
        target_text(),
        proof(1, NOW, 1)
    );
    assert!(text.len() < HeadLimits::default().max_head_bytes);
    assert!(matches!(
        parse_head(text.as_bytes(), &HeadLimits::default()),
        Ok(HeadStatus::Complete(_))
    ));
}

/// The streaming park proof vector of docs/protocol-publications.md §7 (seed 00..1f,
/// ts 1795327200, nonce 00..0f), and the family parks with it at that time.
#[test]
fn the_documented_park_proof_vector() {
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut nonce = [0u8; 16];
    for (i, b) in nonce.iter_mut().enumerate() {
        *b = i as u8;
    }
    let t = parse_target(
        "hive:0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f/a1b2c3d4-e5f6-4738-9a0b-1c2d3e4f5061",
    )
    .unwrap();
    let signer = SigningKey::from_bytes(&seed);
    assert_eq!(
        park_proof_header(&signer, &t, 1_795_327_200, &nonce),
        "Hive ts=1795327200, nonce=000102030405060708090a0b0c0d0e0f, sig=gLWGY3hUYGancpiQK1VZRJVKxTK2DwuFJcAon9mbHeWK7+WSJneVcsfgivqwkLi/XZGSlJMTkIItvQxfBVptCg=="
    );
}

/// The fuzz corpus's `park_valid` seed reaches the park path (at the harness's `now`).
#[test]
fn the_park_seed_of_the_fuzz_corpus_parks() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/corpus/hive_connect/park_valid"
    );
    let seed = std::fs::read(path).unwrap();
    let h = head(std::str::from_utf8(&seed[1..]).unwrap());
    assert_eq!(
        HiveConnect::default().route(&h, b"", NOW, Transport::Plain),
        Route::park(key_of_target())
    );
}
