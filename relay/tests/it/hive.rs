//! The Hive family end to end through `tryst serve`: publications (exact bodies back,
//! refusals with their exact JSON), forward mailboxes with the drain proof, the board
//! switch, and federation between two relays (push and pull).

use crate::relay::Relay;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, SigningKey};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tryst_relay::hive::forward::{DRAIN_DOMAIN, proof_message};
use tryst_relay::hive::record::{Candidate, Record, format_rfc3339_utc, format_uuid};
use tryst_relay::hive::verify::sign_publication;

#[derive(Debug, PartialEq, Eq)]
struct Resp {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s
}

fn receive(mut s: TcpStream) -> Resp {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&raw)));
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let content_type = lines
        .filter_map(|l| l.split_once(": "))
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.to_owned());
    Resp {
        status,
        content_type,
        body: raw[end + 4..].to_vec(),
    }
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    receive(send(addr, method, path, headers, body))
}

fn json(status: u16, body: &str) -> Resp {
    Resp {
        status,
        content_type: Some("application/json".into()),
        body: body.as_bytes().to_vec(),
    }
}

fn ok() -> Resp {
    json(200, r#"{"ok":true}"#)
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

const WS: [u8; 16] = [0xa1; 16];

fn device_key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// A publication of device `[n; 16]` signed by `device_key(n)`, dated `now + offset`.
fn publication(n: u8, offset: i64, ttl: u32) -> Vec<u8> {
    let record = Record {
        workspace: WS,
        account: [0xb2; 16],
        device: [n; 16],
        signing_key: [0; 32],
        candidates: vec![Candidate {
            kind: "stunReflexive".into(),
            host: "203.0.113.5".into(),
            port: 51820,
            priority: 100,
        }],
        published_at: format_rfc3339_utc(now() + offset),
        ttl_seconds: ttl,
    };
    sign_publication(&device_key(n), &record)
}

fn ws() -> String {
    format_uuid(&WS)
}

fn dev(n: u8) -> String {
    format_uuid(&[n; 16])
}

fn drain_auth(n: u8, nonce: [u8; 16]) -> String {
    let ts = u64::try_from(now()).unwrap();
    let sig = device_key(n).sign(&proof_message(DRAIN_DOMAIN, &WS, &[n; 16], ts, &nonce));
    format!(
        "Hive-Drain ts={ts}, nonce={}, sig={}",
        hex::encode(nonce),
        STANDARD.encode(sig.to_bytes())
    )
}

#[test]
fn publications_round_trip_exactly_and_refusals_are_named() {
    let relay = Relay::http(&["--max-ttl", "120s"]);
    let a = relay.addr;
    assert_eq!(
        request(a, "GET", "/v1/health", &[], b""),
        Resp {
            status: 200,
            content_type: Some("text/plain".into()),
            body: b"ok".to_vec()
        }
    );
    let p1 = publication(1, 0, 90);
    let p2 = publication(2, -5, 3600);
    assert_eq!(request(a, "POST", "/v1/rendezvous", &[], &p1), ok());
    assert_eq!(request(a, "POST", "/v1/rendezvous", &[], &p2), ok());
    let one = request(
        a,
        "GET",
        &format!("/v1/rendezvous/{}/{}", ws(), dev(1)),
        &[],
        b"",
    );
    assert_eq!(
        one,
        Resp {
            status: 200,
            content_type: Some("application/json".into()),
            body: p1.clone()
        }
    );
    let all = request(a, "GET", &format!("/v1/rendezvous/{}", ws()), &[], b"");
    let mut want = b"[".to_vec();
    want.extend(&p1);
    want.push(b',');
    want.extend(&p2);
    want.push(b']');
    assert_eq!(all.body, want);
    assert_eq!(
        request(
            a,
            "GET",
            &format!("/v1/rendezvous/{}/{}", ws(), dev(9)),
            &[],
            b""
        ),
        json(404, r#"{"error":"no fresh publication"}"#)
    );
    // Older never replaces newer.
    assert_eq!(
        request(a, "POST", "/v1/rendezvous", &[], &publication(1, -10, 90)),
        json(
            409,
            r#"{"error":"a newer publication of this device is stored"}"#
        )
    );
    assert_eq!(
        request(a, "POST", "/v1/rendezvous", &[], &publication(3, 301, 90)),
        json(400, r#"{"error":"publishedAt out of skew window"}"#)
    );
    assert_eq!(
        request(a, "POST", "/v1/rendezvous", &[], &publication(3, -301, 90)),
        json(400, r#"{"error":"publishedAt out of skew window"}"#)
    );
    let forged = String::from_utf8(publication(3, 0, 90))
        .unwrap()
        .replace("\"port\":51820", "\"port\":51821");
    assert_eq!(
        request(a, "POST", "/v1/rendezvous", &[], forged.as_bytes()),
        json(400, r#"{"error":"bad signature"}"#)
    );
    assert_eq!(
        request(a, "POST", "/v1/rendezvous", &[], b"[]"),
        json(
            400,
            r#"{"error":"malformed record: the publication must be a JSON object"}"#
        )
    );
    let mut s = TcpStream::connect(a).unwrap();
    write!(
        s,
        "POST /v1/rendezvous HTTP/1.1\r\nHost: r\r\nContent-Length: 8193\r\n\r\n"
    )
    .unwrap();
    assert_eq!(
        receive(s),
        json(413, r#"{"error":"publication too large"}"#)
    );
}

#[test]
fn forward_mailboxes_end_to_end() {
    let relay = Relay::http(&["--forward-poll-timeout", "300ms"]);
    let a = relay.addr;
    let path = format!("/v1/forward/{}/{}", ws(), dev(4));
    assert_eq!(
        request(a, "POST", &path, &[], b"frame"),
        json(404, r#"{"error":"no fresh publication"}"#)
    );
    assert_eq!(
        request(a, "POST", "/v1/rendezvous", &[], &publication(4, 0, 300)),
        ok()
    );
    let mut s = TcpStream::connect(a).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: r\r\nContent-Length: {}\r\n\r\n",
        (1 << 20) + 1
    )
    .unwrap();
    assert_eq!(
        receive(s),
        json(413, r#"{"error":"forward body larger than 1 MiB"}"#)
    );
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    assert_eq!(request(a, "POST", &path, &[], &big), ok());
    assert_eq!(request(a, "POST", &path, &[], b"tail"), ok());
    assert_eq!(
        request(a, "GET", &path, &[], b""),
        json(401, r#"{"error":"drain proof: missing Authorization"}"#)
    );
    let auth = drain_auth(4, [1; 16]);
    let mut want = big.clone();
    want.extend(b"tail");
    assert_eq!(
        request(a, "GET", &path, &[("Authorization", &auth)], b""),
        Resp {
            status: 200,
            content_type: Some("application/octet-stream".into()),
            body: want
        }
    );
    assert_eq!(
        request(a, "GET", &path, &[("Authorization", &auth)], b""),
        json(401, r#"{"error":"drain proof replayed"}"#)
    );
    // Empty: 204 after the poll timeout.
    let t0 = Instant::now();
    let r = request(
        a,
        "GET",
        &path,
        &[("Authorization", &drain_auth(4, [2; 16]))],
        b"",
    );
    assert_eq!((r.status, r.body.len()), (204, 0));
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    // A drain that is waiting gets what arrives while it waits (or at once if the POST
    // won the race).
    let waiter = {
        let (path, auth) = (path.clone(), drain_auth(4, [3; 16]));
        thread::spawn(move || request(a, "GET", &path, &[("Authorization", &auth)], b""))
    };
    assert_eq!(request(a, "POST", &path, &[], b"late"), ok());
    let r = waiter.join().unwrap();
    if r.status == 204 {
        // The drain timed out before the POST: the frame is still queued.
        let r = request(
            a,
            "GET",
            &path,
            &[("Authorization", &drain_auth(4, [4; 16]))],
            b"",
        );
        assert_eq!(r.body, b"late");
    } else {
        assert_eq!(r.body, b"late");
    }
}

#[test]
fn the_candidates_board_is_off_by_default_and_works_when_on() {
    let off = Relay::http(&[]);
    assert_eq!(
        request(off.addr, "GET", "/v1/workspaces/w1/candidates", &[], b""),
        json(404, r#"{"error":"not found"}"#)
    );
    let on = Relay::http(&["--hive-board", "true"]);
    assert_eq!(
        request(
            on.addr,
            "POST",
            "/v1/workspaces/w1/candidates",
            &[],
            br#"{"device_id":"laptop","data":{"host":"10.0.0.2","port":4000}}"#
        ),
        ok()
    );
    assert_eq!(
        request(on.addr, "GET", "/v1/workspaces/w1/candidates", &[], b""),
        json(200, r#"{"laptop":{"host":"10.0.0.2","port":4000}}"#)
    );
}

fn wait_for(relay: &Relay, path: &str, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = request(relay.addr, "GET", path, &[], b"");
        if r.status == 200 && r.body == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never served the publication: {r:?}\nlog:\n{}",
            relay.log()
        );
        // Pacing between polls of another process's progress.
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_relays_federate_by_push_and_pull() {
    let a = Relay::http(&[]);
    // Published on A before B exists: B learns it by pulling A's export.
    let p1 = publication(5, 0, 300);
    assert_eq!(request(a.addr, "POST", "/v1/rendezvous", &[], &p1), ok());
    let b = Relay::http(&["--mirror", &a.url(), "--mirror-interval", "100ms"]);
    wait_for(&b, &format!("/v1/rendezvous/{}/{}", ws(), dev(5)), &p1);
    // Published on B: pushed to A (which does not mirror anyone).
    let p2 = publication(6, 0, 300);
    assert_eq!(request(b.addr, "POST", "/v1/rendezvous", &[], &p2), ok());
    wait_for(&a, &format!("/v1/rendezvous/{}/{}", ws(), dev(6)), &p2);
    // A newer publication replaces the older one on both.
    let p1b = publication(5, 1, 300);
    assert_eq!(request(a.addr, "POST", "/v1/rendezvous", &[], &p1b), ok());
    wait_for(&b, &format!("/v1/rendezvous/{}/{}", ws(), dev(5)), &p1b);
}

/// Two simulated devices publish, find each other in the workspace listing (and
/// re-verify what they find), then exchange length-prefixed frames both ways through
/// their forward mailboxes.
#[test]
fn two_devices_find_each_other_and_exchange_frames() {
    let relay = Relay::http(&["--forward-poll-timeout", "5s"]);
    let a = relay.addr;
    let (x, y) = (7u8, 8u8);
    assert_eq!(
        request(a, "POST", "/v1/rendezvous", &[], &publication(x, 0, 90)),
        ok()
    );
    assert_eq!(
        request(a, "POST", "/v1/rendezvous", &[], &publication(y, 0, 90)),
        ok()
    );
    let listing = request(a, "GET", &format!("/v1/rendezvous/{}", ws()), &[], b"");
    let all: Vec<serde_json::Value> = serde_json::from_slice(&listing.body).unwrap();
    let policy = tryst_relay::hive::PublicationPolicy::default();
    let mut found = Vec::new();
    for p in &all {
        let body = p.to_string();
        // Re-serialised by serde_json here; each device re-verifies the exact bytes it
        // reads from the single-device endpoint instead.
        let device = p["record"]["publisherDeviceID"]
            .as_str()
            .unwrap()
            .to_owned();
        let exact = request(
            a,
            "GET",
            &format!("/v1/rendezvous/{}/{device}", ws()),
            &[],
            b"",
        );
        let v = tryst_relay::hive::verify_publication(&exact.body, now(), &policy).unwrap();
        assert!(body.contains(&device));
        found.push(v.device[0]);
    }
    assert_eq!(found, [x, y]);
    let frame = |payload: &[u8]| {
        let mut f = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
        f.extend_from_slice(payload);
        f
    };
    // X -> Y, two frames; Y is already waiting for the second exchange.
    let to_y = format!("/v1/forward/{}/{}", ws(), dev(y));
    let to_x = format!("/v1/forward/{}/{}", ws(), dev(x));
    assert_eq!(request(a, "POST", &to_y, &[], &frame(b"hello")), ok());
    assert_eq!(request(a, "POST", &to_y, &[], &frame(b"from x")), ok());
    let got = request(
        a,
        "GET",
        &to_y,
        &[("Authorization", &drain_auth(y, [1; 16]))],
        b"",
    );
    let mut want = frame(b"hello");
    want.extend(frame(b"from x"));
    assert_eq!((got.status, got.body), (200, want));
    let x_waits = {
        let (path, auth) = (to_x.clone(), drain_auth(x, [2; 16]));
        thread::spawn(move || request(a, "GET", &path, &[("Authorization", &auth)], b""))
    };
    assert_eq!(request(a, "POST", &to_x, &[], &frame(b"hi x")), ok());
    let got = x_waits.join().unwrap();
    assert_eq!((got.status, got.body), (200, frame(b"hi x")));
    // Y's key cannot drain X's mailbox.
    let ts = u64::try_from(now()).unwrap();
    let nonce = [3u8; 16];
    let sig = device_key(y).sign(&proof_message(DRAIN_DOMAIN, &WS, &[x; 16], ts, &nonce));
    let forged = format!(
        "Hive-Drain ts={ts}, nonce={}, sig={}",
        hex::encode(nonce),
        STANDARD.encode(sig.to_bytes())
    );
    assert_eq!(
        request(a, "GET", &to_x, &[("Authorization", &forged)], b""),
        json(401, r#"{"error":"drain proof: bad signature"}"#)
    );
}

/// `--max-ttl` caps what the client asks for, end to end: a publication made 10 s ago
/// asking for 90 s is fresh under the default cap (300 s) but already expired under a
/// 5 s cap, and the refusal says so.
#[test]
fn max_ttl_caps_the_requested_ttl() {
    let p = publication(3, -10, 90);
    let default = Relay::http(&[]);
    assert_eq!(
        request(default.addr, "POST", "/v1/rendezvous", &[], &p),
        ok()
    );
    let capped = Relay::http(&["--max-ttl", "5s"]);
    assert_eq!(
        request(capped.addr, "POST", "/v1/rendezvous", &[], &p),
        json(400, r#"{"error":"publication already expired"}"#)
    );
    // Within the cap it is stored and served.
    let fresh = publication(4, -2, 90);
    assert_eq!(
        request(capped.addr, "POST", "/v1/rendezvous", &[], &fresh),
        ok()
    );
    assert_eq!(
        request(
            capped.addr,
            "GET",
            &format!("/v1/rendezvous/{}/{}", ws(), dev(4)),
            &[],
            b""
        )
        .body,
        fresh
    );
}
