//! The HTTP families across nodes (issue #16): three relays on 127.0.0.2-4 sharing one
//! private `redis-server` (scripts/redis-test.sh, through [`TestRedis`]). A Pico GET on
//! one node meets a POST on another with the bytes a single node answers; a forward
//! POST on B is drained on C; a publication made on A is found on C; Redis stopped and
//! started again; a node killed with kill -9.

use crate::cluster::{TestRedis, start_node, write_psk};
use crate::relay::Relay;
use crate::tunnel::metric_sum;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, SigningKey};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tryst_relay::hive::forward::{DRAIN_DOMAIN, proof_message};
use tryst_relay::hive::record::{Candidate, Record, format_rfc3339_utc, format_uuid};
use tryst_relay::hive::verify::sign_publication;

const PSK: &str = "cluster-http test mesh key, 0123456789";
const TIMEOUT_JSON: &[u8] =
    b"{\"status\": \"error\", \"code\": 2, \"message\": \"request timed out\"}\n";
const OK_JSON: &[u8] = b"{\"status\": \"ok\", \"code\": 0}\n";

pub(crate) struct Nodes {
    pub(crate) redis: TestRedis,
    _keys: tempfile::TempDir,
    pub(crate) nodes: Vec<Relay>,
}

/// Three nodes `a`, `b`, `c` on 127.0.0.2-4 (`--workers 1` and `extra`), each seeing
/// the other two as live.
pub(crate) fn three(extra: &[&str]) -> Nodes {
    let redis = TestRedis::start();
    let keys = tempfile::tempdir().unwrap();
    let psk = write_psk(keys.path(), PSK);
    let mut flags = vec!["--workers", "1"];
    flags.extend_from_slice(extra);
    let nodes: Vec<Relay> = [("a", "127.0.0.2"), ("b", "127.0.0.3"), ("c", "127.0.0.4")]
        .iter()
        .map(|(name, ip)| start_node(&redis, &psk, name, ip, &flags))
        .collect();
    for n in &nodes {
        assert_eq!(n.await_metric("tryst_cluster_live_nodes", 2), 2);
    }
    Nodes {
        redis,
        _keys: keys,
        nodes,
    }
}

fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
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

/// A whole reply: (head without its `date` line, body).
fn reply(mut s: TcpStream) -> (String, Vec<u8>) {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&raw)));
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let head: Vec<&str> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
        .collect();
    (head.join("\r\n"), raw[end + 4..].to_vec())
}

pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (String, Vec<u8>) {
    reply(send(addr, method, path, headers, body))
}

pub(crate) fn status(head: &str) -> u16 {
    head[9..12].parse().unwrap()
}

fn channel() -> String {
    format!("/channel/{}", hex::encode(crate::tunnel::nonce()))
}

fn pico_waiting(node: &Relay, want: u64) {
    assert_eq!(node.await_metric("tryst_pico_waiting", want), want);
}

/// One Pico exchange: the first party (`reader_first`: the GET) waits on `first`, the
/// other goes to `second`; the (reader, writer) replies.
fn pico_exchange(
    first: &Relay,
    second: &Relay,
    reader_first: bool,
    payload: &[u8],
) -> ((String, Vec<u8>), (String, Vec<u8>)) {
    let path = channel();
    let octets = [("Content-Type", "application/octet-stream")];
    if reader_first {
        let reader = send(first.addr, "GET", &path, &[], b"");
        pico_waiting(first, 1);
        let writer = request(second.addr, "POST", &path, &octets, payload);
        (reply(reader), writer)
    } else {
        let writer = send(first.addr, "POST", &path, &octets, payload);
        pico_waiting(first, 1);
        let reader = request(second.addr, "GET", &path, &[], b"");
        (reader, reply(writer))
    }
}

fn proxied(node: &Relay, family: &str) -> u64 {
    crate::tunnel::series_value(
        &node.metrics(),
        &format!("tryst_cluster_http_proxied_total{{family=\"{family}\"}}"),
    )
}

/// A GET waiting on A meets a POST on C, and a POST waiting on A meets a GET on C: every
/// reply is byte for byte what one node answers (its `date` aside), the message
/// included; a client that goes away from C frees the owner's waiting slot.
#[test]
fn pico_get_on_a_meets_post_on_c_with_the_exact_bytes() {
    let n = three(&["--pico-wait", "20s"]);
    let (a, b, c) = (&n.nodes[0], &n.nodes[1], &n.nodes[2]);
    let payload: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    for reader_first in [true, false] {
        let local = pico_exchange(a, a, reader_first, &payload);
        let across = pico_exchange(a, c, reader_first, &payload);
        assert!(local.0.1 == payload, "the local reader's message");
        assert_eq!(local.1.1, OK_JSON);
        assert_eq!(
            (&across.0.0, &across.1),
            (&local.0.0, &local.1),
            "reader first: {reader_first}"
        );
        assert!(across.0.1 == payload, "the reader's message across nodes");
    }
    assert_eq!(proxied(c, "pico"), 2);
    assert_eq!(proxied(a, "pico"), 0);

    // A DELETE on A makes A the owner; a GET from B waits there through the mesh, and
    // its client's disconnect reaches A (the slot is free long before the 20 s wait).
    let path = channel();
    let (head, body) = request(a.addr, "DELETE", &path, &[], b"");
    assert_eq!((status(&head), body.as_slice()), (200, OK_JSON));
    let reader = send(b.addr, "GET", &path, &[], b"");
    pico_waiting(a, 1);
    assert_eq!(b.metric("tryst_pico_waiting"), 0);
    drop(reader);
    pico_waiting(a, 0);
}

const WS: [u8; 16] = [0xc3; 16];

fn unix_now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn device_key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// A publication of device `[n; 16]` in [`WS`], signed by `device_key(n)`.
fn publication(n: u8) -> Vec<u8> {
    let record = Record {
        workspace: WS,
        account: [0xd4; 16],
        device: [n; 16],
        signing_key: [0; 32],
        candidates: vec![Candidate {
            kind: "stunReflexive".into(),
            host: "203.0.113.7".into(),
            port: 51820,
            priority: 100,
        }],
        published_at: format_rfc3339_utc(unix_now()),
        ttl_seconds: 300,
    };
    sign_publication(&device_key(n), &record)
}

fn publication_path(n: u8) -> String {
    format!(
        "/v1/rendezvous/{}/{}",
        format_uuid(&WS),
        format_uuid(&[n; 16])
    )
}

pub(crate) fn forward_path(n: u8) -> String {
    format!("/v1/forward/{}/{}", format_uuid(&WS), format_uuid(&[n; 16]))
}

pub(crate) fn drain_auth(n: u8) -> String {
    let ts = u64::try_from(unix_now()).unwrap();
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&crate::tunnel::nonce());
    let sig = device_key(n).sign(&proof_message(DRAIN_DOMAIN, &WS, &[n; 16], ts, &nonce));
    format!(
        "Hive-Drain ts={ts}, nonce={}, sig={}",
        hex::encode(nonce),
        STANDARD.encode(sig.to_bytes())
    )
}

pub(crate) fn publish(node: &Relay, n: u8) -> Vec<u8> {
    let body = publication(n);
    let (head, reply) = request(node.addr, "POST", "/v1/rendezvous", &[], &body);
    assert_eq!(
        (status(&head), reply.as_slice()),
        (200, &br#"{"ok":true}"#[..])
    );
    body
}

const OCTETS: &str = "content-type: application/octet-stream";
const NO_PUBLICATION: &[u8] = br#"{"error":"no fresh publication"}"#;

/// A publication made on A is found on C (alone and in its workspace's list); a
/// forward POST on B is drained on C (B owns the mailbox: the drain is carried there),
/// and the same proof replayed through A is refused by the owner's replay cache.
#[test]
fn hive_publication_from_a_found_on_c_and_forward_post_on_b_drained_on_c() {
    let n = three(&["--forward-poll-timeout", "2s"]);
    let (a, b, c) = (&n.nodes[0], &n.nodes[1], &n.nodes[2]);
    let body = publish(a, 1);
    let (head, got) = request(c.addr, "GET", &publication_path(1), &[], b"");
    assert_eq!((status(&head), got), (200, body.clone()));
    let list = format!("/v1/rendezvous/{}", format_uuid(&WS));
    let (head, got) = request(c.addr, "GET", &list, &[], b"");
    let mut want = b"[".to_vec();
    want.extend_from_slice(&body);
    want.push(b']');
    assert_eq!((status(&head), got), (200, want));
    // Unknown devices stay the family's 404 on every node.
    let (head, got) = request(b.addr, "GET", &publication_path(9), &[], b"");
    assert_eq!((status(&head), got.as_slice()), (404, NO_PUBLICATION));

    let frame: Vec<u8> = (0..=255u8).rev().cycle().take(5000).collect();
    let (head, got) = request(b.addr, "POST", &forward_path(1), &[], &frame);
    assert_eq!(
        (status(&head), got.as_slice()),
        (200, &br#"{"ok":true}"#[..])
    );
    let auth = drain_auth(1);
    let (head, got) = request(
        c.addr,
        "GET",
        &forward_path(1),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(status(&head), 200, "{head}");
    assert!(head.contains(OCTETS), "{head}");
    assert_eq!(got, frame);
    assert_eq!(proxied(c, "hive_forward"), 1);
    let (head, got) = request(
        a.addr,
        "GET",
        &forward_path(1),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(
        (status(&head), got.as_slice()),
        (401, &br#"{"error":"drain proof replayed"}"#[..])
    );
    assert_eq!(proxied(a, "hive_forward"), 1);
    assert_eq!(proxied(b, "hive_forward"), 0);
}

/// Polls (bounded) until `f` holds.
pub(crate) fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Redis stopped: every node keeps serving from its own state, promptly, with the
/// families' own answers for what lives elsewhere (a publication made on another node:
/// 404; a Pico GET and POST on two nodes: both time out with code 2; a forward POST for
/// a device this node never saw: 404), counted as fallbacks. Redis started again (empty):
/// what was published meanwhile is re-written and found from the other nodes, and
/// channels meet across nodes again.
#[test]
fn redis_down_serves_local_state_and_heals_when_it_returns() {
    let n = three(&["--pico-wait", "2s", "--forward-poll-timeout", "1s"]);
    let (a, b, c) = (&n.nodes[0], &n.nodes[1], &n.nodes[2]);
    let before = publish(a, 2);
    let (_, got) = request(c.addr, "GET", &publication_path(2), &[], b"");
    assert_eq!(got, before);

    n.redis.stop();
    for node in &n.nodes {
        assert_eq!(node.await_metric("tryst_cluster_directory_connected", 0), 0);
    }
    // Local: a whole Pico exchange on A.
    let payload = b"\x00\x01local only\xff".to_vec();
    let ((_, got), (_, ok)) = pico_exchange(a, a, true, &payload);
    assert_eq!((got, ok.as_slice()), (payload.clone(), OK_JSON));
    // What C already holds it still serves; what A publishes now it cannot see.
    let (_, got) = request(c.addr, "GET", &publication_path(2), &[], b"");
    assert_eq!(got, before);
    let during = publish(a, 3);
    let t0 = Instant::now();
    let (head, got) = request(c.addr, "GET", &publication_path(3), &[], b"");
    assert_eq!((status(&head), got.as_slice()), (404, NO_PUBLICATION));
    let (head, got) = request(b.addr, "POST", &forward_path(3), &[], b"frame");
    assert_eq!((status(&head), got.as_slice()), (404, NO_PUBLICATION));
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // A GET on A and a POST on C cannot meet: each waits alone and times out (code 2).
    let path = channel();
    let reader = send(a.addr, "GET", &path, &[], b"");
    pico_waiting(a, 1);
    let (head, got) = request(c.addr, "POST", &path, &[], b"lost");
    assert_eq!((status(&head), got.as_slice()), (200, TIMEOUT_JSON));
    let (head, got) = reply(reader);
    assert_eq!((status(&head), got.as_slice()), (200, TIMEOUT_JSON));
    for node in [b, c] {
        assert!(
            metric_sum(&node.metrics(), "tryst_cluster_http_local_fallbacks_total") > 0,
            "{}",
            node.metrics()
        );
    }

    n.redis.start_again();
    for node in &n.nodes {
        assert_eq!(node.await_metric("tryst_cluster_directory_connected", 1), 1);
        assert_eq!(node.await_metric("tryst_cluster_live_nodes", 2), 2);
    }
    eventually(
        "the publication made while Redis was down, found on C",
        || request(c.addr, "GET", &publication_path(3), &[], b"").1 == during,
    );
    let ((_, got), (_, ok)) = pico_exchange(a, c, true, &payload);
    assert_eq!((got, ok.as_slice()), (payload, OK_JSON));
}

/// A node killed with kill -9: its channels and mailboxes move to the node that asks
/// next, once its liveness record has expired (5 s); what it held is lost. A GET on C
/// and a POST on B for a channel A owned meet; a forward POST on B for a mailbox A
/// owned is accepted and drained on C without what A held.
#[test]
fn a_killed_owner_s_channels_and_mailboxes_move_to_the_live_nodes() {
    let n = three(&["--pico-wait", "20s", "--forward-poll-timeout", "1s"]);
    let (a, b, c) = (&n.nodes[0], &n.nodes[1], &n.nodes[2]);
    publish(a, 4);
    let path = channel();
    let (head, _) = request(a.addr, "DELETE", &path, &[], b"");
    assert_eq!(status(&head), 200);
    let (head, _) = request(a.addr, "POST", &forward_path(4), &[], b"held by a");
    assert_eq!(status(&head), 200);

    let killed = Command::new("kill")
        .args(["-9", &a.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let t0 = Instant::now();
    // Real Pico clients poll (or post) again on code 2; so do these.
    let again = |addr: SocketAddr, method: &'static str, body: Vec<u8>| {
        let path = path.clone();
        std::thread::spawn(move || {
            for _ in 0..5 {
                let (_, got) = request(addr, method, &path, &[], &body);
                if got != TIMEOUT_JSON {
                    return got;
                }
            }
            panic!("{method}: code 2 five times");
        })
    };
    let payload = b"after the crash".to_vec();
    let reader = again(c.addr, "GET", Vec::new());
    let writer = again(b.addr, "POST", payload.clone());
    assert_eq!(writer.join().unwrap(), OK_JSON);
    assert_eq!(reader.join().unwrap(), payload);
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());

    let (head, got) = request(b.addr, "POST", &forward_path(4), &[], b"after");
    assert_eq!(
        (status(&head), got.as_slice()),
        (200, &br#"{"ok":true}"#[..])
    );
    let auth = drain_auth(4);
    let (head, got) = request(
        c.addr,
        "GET",
        &forward_path(4),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!((status(&head), got.as_slice()), (200, &b"after"[..]));
    let takeovers =
        |node: &Relay| metric_sum(&node.metrics(), "tryst_cluster_http_takeovers_total");
    assert_eq!(takeovers(b) + takeovers(c), 2);
}

fn signal(node: &Relay, sig: &str) {
    let sent = Command::new("kill")
        .args([sig, &node.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {sig}");
}

/// An owner that hangs (SIGSTOP: its sockets accept, nothing answers) costs a bounded
/// wait, never a hang: a forward POST carried to it is answered
/// `503 {"error":"forward mailbox unavailable"}` with `Retry-After: 1`, a drain `204`,
/// once the exchange's deadline (poll timeout + 10 s) has passed.
#[test]
fn a_hung_owner_costs_a_bounded_wait_and_the_families_own_answers() {
    let n = three(&["--forward-poll-timeout", "1s"]);
    let (a, b, c) = (&n.nodes[0], &n.nodes[1], &n.nodes[2]);
    publish(a, 5);
    let (head, _) = request(a.addr, "POST", &forward_path(5), &[], b"on a");
    assert_eq!(status(&head), 200);
    signal(a, "-STOP");
    let t0 = Instant::now();
    let drain = {
        let (addr, path, auth) = (c.addr, forward_path(5), drain_auth(5));
        std::thread::spawn(move || request(addr, "GET", &path, &[("Authorization", &auth)], b""))
    };
    let (head, got) = request(b.addr, "POST", &forward_path(5), &[], b"frame");
    signal(a, "-CONT");
    assert_eq!(status(&head), 503, "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert_eq!(got, br#"{"error":"forward mailbox unavailable"}"#);
    let (head, got) = drain.join().unwrap();
    assert_eq!((status(&head), got.len()), (204, 0), "{head}");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(30),
        "{waited:?}"
    );
    assert!(metric_sum(&b.metrics(), "tryst_cluster_http_proxy_errors_total") >= 1);
}

/// A restarted owner (same name, a new run) holds nothing of its earlier run: its keys
/// are taken over by the next node that asks, without waiting for a liveness TTL.
#[test]
fn a_restarted_owner_s_keys_are_taken_over_by_the_next_node_that_asks() {
    let mut n = three(&["--pico-wait", "20s"]);
    let path = channel();
    let (head, _) = request(n.nodes[0].addr, "DELETE", &path, &[], b"");
    assert_eq!(status(&head), 200);
    let keys = tempfile::tempdir().unwrap();
    let psk = write_psk(keys.path(), PSK);
    let a = n.nodes.remove(0);
    let mut args = crate::cluster::node_args(&n.redis, &psk, "a", "127.0.0.2");
    args.extend(["--workers", "1", "--pico-wait", "20s"].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = a.restart(&refs);
    let c = &n.nodes[1];
    let t0 = Instant::now();
    let reader = send(c.addr, "GET", &path, &[], b"");
    pico_waiting(c, 1);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(
        crate::tunnel::series_value(
            &c.metrics(),
            "tryst_cluster_http_takeovers_total{family=\"pico\"}"
        ),
        1
    );
    assert_eq!(a.metric("tryst_pico_waiting"), 0);
    drop(reader);
}
