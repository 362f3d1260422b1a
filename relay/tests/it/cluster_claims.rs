//! What must be cluster-wide on the `CONNECT` side (issue #16): a proof replayed to
//! another node, a node-rendezvous replace park on another node, a single-shot tag
//! raced from two nodes, and what happens while the directory (a private
//! `redis-server`, stopped and started again by the test) is down.
//!
//! Waiting is on events only: a read returning, a metric reaching its value (bounded).

use crate::cluster::{TestRedis as Redis, start_node, write_psk};
use crate::relay::Relay;
use crate::tunnel::{
    OK, now_unix, park_head, read_exact_n, read_to_close, status_and_code, wait_past,
};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Duration;
use tryst_client::tag::{self as publisher, CreateOptions, HashedTag, TagMode, hashed_tag};

const PSK: &str = "cluster claims test mesh key 0123";

/// A node named `name` on `ip` with one worker and `extra` flags.
fn node(redis: &Redis, psk: &Path, name: &str, ip: &str, extra: &[&str]) -> Relay {
    let mut flags: Vec<&str> = vec!["--workers", "1"];
    flags.extend_from_slice(extra);
    start_node(redis, psk, name, ip, &flags)
}

fn series(relay: &Relay, series: &str) -> u64 {
    crate::tunnel::series_value(&relay.metrics(), series)
}

fn await_series(relay: &Relay, series: &str, want: u64) -> u64 {
    relay.await_value(want, |t| crate::tunnel::series_value(t, series))
}

/// A parked connection the relay keeps: nothing arrives and it is not closed within
/// 300 ms (the read times out).
fn assert_still_parked(parked: &mut TcpStream) {
    parked
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let still = parked.read(&mut byte);
    assert!(
        matches!(&still, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "{still:?}"
    );
}

/// Waits until `relay`'s directory answers (its first liveness write).
fn await_connected(relay: &Relay) {
    assert_eq!(
        relay.await_metric("tryst_cluster_directory_connected", 1),
        1
    );
}

fn nonce() -> Vec<u8> {
    (0..16).map(|_| rand::random::<u8>()).collect()
}

const WON: &str = "tryst_cluster_claims_total{verdict=\"won\"}";
const LOST: &str = "tryst_cluster_claims_total{verdict=\"lost\"}";
const FALLBACK: &str = "tryst_cluster_claims_fallback_total{reason=\"unavailable\"}";

/// A native park proof accepted on A and sent to B is refused by B with exactly the
/// bytes A sends for a local replay; B counts a lost claim, A a won one.
#[test]
fn a_native_proof_replayed_to_another_node_is_refused_like_a_local_replay() {
    let redis = Redis::start();
    let keys = tempfile::tempdir().unwrap();
    let psk = write_psk(keys.path(), PSK);
    let a = node(&redis, &psk, "a", "127.0.0.2", &[]);
    let b = node(&redis, &psk, "b", "127.0.0.3", &[]);
    await_connected(&a);
    await_connected(&b);
    // Both nodes refuse proofs stamped in or before their start second.
    wait_past(now_unix());
    let head = park_head(now_unix(), &nonce());
    let mut parked = a.connect();
    parked.write_all(head.as_bytes()).unwrap();
    assert_eq!(read_exact_n(&mut parked, OK.len()), OK);
    assert_eq!(series(&a, WON), 1);
    let on_b = b.exchange(head.as_bytes());
    assert_eq!(
        status_and_code(&on_b),
        (403, "replayed_nonce".into()),
        "{on_b}"
    );
    let on_a = a.exchange(head.as_bytes());
    assert_eq!(on_b, on_a, "the same bytes as a local replay");
    assert_eq!(series(&b, LOST), 1);
    assert_eq!(series(&b, WON), 0);
    // A fresh proof parks on B.
    let mut fresh = b.connect();
    fresh
        .write_all(park_head(now_unix(), &nonce()).as_bytes())
        .unwrap();
    assert_eq!(read_exact_n(&mut fresh, OK.len()), OK);
    assert_eq!(series(&b, WON), 1);
}

/// Parks a tag publisher on `relay` with a fresh proof and reads its 200.
fn tag_park(relay: &Relay, tag: &HashedTag, options: &CreateOptions) -> TcpStream {
    let head = publisher::park_request(
        tag,
        &tag.derived_signing_key(),
        now_unix(),
        &nonce(),
        options,
    );
    let mut s = relay.connect();
    s.write_all(head.as_bytes()).unwrap();
    assert_eq!(read_exact_n(&mut s, OK.len()), OK, "tag park refused");
    s
}

fn respond_head(tag: &HashedTag) -> String {
    format!("CONNECT {} HTTP/1.1\r\n\r\n", tag.target())
}

fn single_shot() -> CreateOptions {
    CreateOptions {
        mode: Some(TagMode::SingleShot),
        ..CreateOptions::default()
    }
}

/// A tag park proof accepted on A is refused on B with A's exact local replay answer.
#[test]
fn a_tag_park_proof_replayed_to_another_node_is_refused_like_a_local_replay() {
    let redis = Redis::start();
    let keys = tempfile::tempdir().unwrap();
    let psk = write_psk(keys.path(), PSK);
    let a = node(&redis, &psk, "a", "127.0.0.2", &[]);
    let b = node(&redis, &psk, "b", "127.0.0.3", &[]);
    await_connected(&a);
    await_connected(&b);
    wait_past(now_unix());
    let tag = hashed_tag("", &hex::encode(rand::random::<[u8; 16]>()));
    let head = publisher::park_request(
        &tag,
        &tag.derived_signing_key(),
        now_unix(),
        &nonce(),
        &CreateOptions::default(),
    );
    let mut parked = a.connect();
    parked.write_all(head.as_bytes()).unwrap();
    assert_eq!(read_exact_n(&mut parked, OK.len()), OK);
    let on_b = b.exchange(head.as_bytes());
    assert_eq!(
        status_and_code(&on_b),
        (403, "replayed_nonce".into()),
        "{on_b}"
    );
    assert_eq!(on_b, a.exchange(head.as_bytes()));
    assert_eq!(series(&b, LOST), 1);
}

/// A single-shot tag published on A, then on B (which replaces A's publisher: a
/// single-shot park replaces across nodes), two responders (one per node) released
/// together: exactly one is paired, with B's publisher, the other gets the exact
/// `404 unknown_tag`.
#[test]
fn a_single_shot_tag_raced_from_two_nodes_has_exactly_one_winner() {
    let redis = Redis::start();
    let keys = tempfile::tempdir().unwrap();
    let psk = write_psk(keys.path(), PSK);
    let a = node(&redis, &psk, "a", "127.0.0.2", &[]);
    let b = node(&redis, &psk, "b", "127.0.0.3", &[]);
    await_connected(&a);
    await_connected(&b);
    wait_past(now_unix());
    let tag = hashed_tag("", &hex::encode(rand::random::<[u8; 16]>()));
    let mut publishers = [
        tag_park(&a, &tag, &single_shot()),
        tag_park(&b, &tag, &single_shot()),
    ];
    publishers[0]
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(read_to_close(&mut publishers[0]), "", "replaced by b's");
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = [a.addr, b.addr]
        .into_iter()
        .map(|addr| {
            let barrier = Arc::clone(&barrier);
            let request = respond_head(&tag);
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                barrier.wait();
                s.write_all(request.as_bytes()).unwrap();
                let mut first = vec![0u8; OK.len()];
                s.read_exact(&mut first).unwrap();
                if first == OK {
                    s.write_all(b"winner").unwrap();
                    (true, String::new(), s)
                } else {
                    let mut rest = String::from_utf8_lossy(&first).into_owned();
                    rest.push_str(&read_to_close(&mut s));
                    (false, rest, s)
                }
            })
        })
        .collect();
    let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    let cluster_series = |relay: &Relay| -> String {
        let text = relay.metrics();
        text.lines()
            .filter(|l| !l.starts_with('#') && (l.contains("cluster") || l.contains("parked")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        results.iter().filter(|(won, ..)| *won).count(),
        1,
        "exactly one winner: {:?}\na:\n{}\nb:\n{}",
        results.iter().map(|(w, r, _)| (w, r)).collect::<Vec<_>>(),
        cluster_series(&a),
        cluster_series(&b)
    );
    let (_, refusal, _) = results.iter().find(|(won, ..)| !won).unwrap();
    let exact = tryst_engine::reject::Rejection::UnknownTag.response();
    assert_eq!(refusal.as_bytes(), exact, "{refusal}");
    // Whichever node the winner asked, it is paired with the publisher on b: the
    // hello, then the bytes.
    let p = &mut publishers[1];
    p.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let hello = read_exact_n(p, 10);
    assert_eq!(&hello, b"TAGHELLO\x01\x00");
    assert_eq!(read_exact_n(p, 6), b"winner");
}

/// While the directory is down: a native park proof falls back to the node's own
/// replay cache (accepted, counted; a local replay still refused), a single-shot tag
/// responder gets the exact `503 overloaded`. When it is back, claims decide again: a
/// proof replayed to another node is refused.
#[test]
fn with_the_directory_down_proofs_fall_back_and_single_shot_tags_answer_503_then_recover() {
    let redis = Redis::start();
    let keys = tempfile::tempdir().unwrap();
    let psk = write_psk(keys.path(), PSK);
    let a = node(&redis, &psk, "a", "127.0.0.2", &[]);
    let b = node(&redis, &psk, "b", "127.0.0.3", &[]);
    await_connected(&a);
    await_connected(&b);
    wait_past(now_unix());
    let tag = hashed_tag("", &hex::encode(rand::random::<[u8; 16]>()));
    let mut publisher = tag_park(&a, &tag, &single_shot());

    redis.stop();
    let head = park_head(now_unix(), &nonce());
    let mut parked = a.connect();
    parked.write_all(head.as_bytes()).unwrap();
    assert_eq!(
        read_exact_n(&mut parked, OK.len()),
        OK,
        "fell back to local"
    );
    assert!(series(&a, FALLBACK) >= 1);
    let replay = a.exchange(head.as_bytes());
    assert_eq!(
        status_and_code(&replay),
        (403, "replayed_nonce".into()),
        "{replay}"
    );
    let before = series(&a, FALLBACK);
    let refusal = a.exchange(respond_head(&tag).as_bytes());
    assert_eq!(
        refusal.as_bytes(),
        tryst_engine::reject::Rejection::Overloaded.response(),
        "{refusal}"
    );
    assert!(series(&a, FALLBACK) > before);

    redis.start_again();
    await_connected(&a);
    await_connected(&b);
    let lost_before = series(&b, LOST);
    let head = park_head(now_unix(), &nonce());
    let mut parked = a.connect();
    parked.write_all(head.as_bytes()).unwrap();
    assert_eq!(read_exact_n(&mut parked, OK.len()), OK);
    let on_b = b.exchange(head.as_bytes());
    assert_eq!(
        status_and_code(&on_b),
        (403, "replayed_nonce".into()),
        "{on_b}"
    );
    assert_eq!(await_series(&b, LOST, lost_before + 1), lost_before + 1);
    // The 503 left the single-shot tag published: a responder now wins it.
    let mut responder = a.connect();
    responder.write_all(respond_head(&tag).as_bytes()).unwrap();
    assert_eq!(read_exact_n(&mut responder, OK.len()), OK);
    publisher
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert_eq!(read_exact_n(&mut publisher, 10), b"TAGHELLO\x01\x00");
}

// ----- node-rendezvous replace across nodes -----

const NODE_ID: &str = "2f402f80-da50-11e1-9b23-0123456789ab";
const NODE_KEY: &[u8] = b"PKMLogv7SFLJubPIvgiRB7q6l7UmxmAmt6NNGWCy";
const LONG_STEP: u64 = 1_000_000_000;

fn node_secrets(dir: &Path) -> PathBuf {
    let path = dir.join("node-secrets.toml");
    let text = format!(
        "[totp]\n\"{NODE_ID}\" = {{ base32 = \"{}\", step = {LONG_STEP} }}\n",
        tryst_engine::totp::encode_base32(NODE_KEY)
    );
    std::fs::write(&path, text).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn node_park(relay: &Relay) -> TcpStream {
    let record = tryst_engine::totp::TotpRecord::new(
        NODE_KEY.to_vec(),
        LONG_STEP,
        tryst_engine::totp::TotpAlgorithm::Sha1,
        None,
    )
    .unwrap();
    let code = tryst_engine::totp::generate(&record, now_unix(), 6);
    let mut s = relay.connect();
    s.write_all(tryst_client::heads::node_park_head(NODE_ID, &code).as_bytes())
        .unwrap();
    assert_eq!(read_exact_n(&mut s, OK.len()), OK);
    s
}

/// A node-rendezvous hidden server parked on A is closed when a newer one parks for the
/// same id on B (replace mode across nodes); the newer one stays parked.
#[test]
fn a_node_rendezvous_park_on_another_node_replaces_the_older_one() {
    let redis = Redis::start();
    let keys = tempfile::tempdir().unwrap();
    let psk = write_psk(keys.path(), PSK);
    let secrets = node_secrets(keys.path());
    let flags = ["--secrets", secrets.to_str().unwrap()];
    let a = node(&redis, &psk, "a", "127.0.0.2", &flags);
    let b = node(&redis, &psk, "b", "127.0.0.3", &flags);
    await_connected(&a);
    await_connected(&b);
    // Both listen for other nodes' replace parks before anyone parks.
    let subscribed = "tryst_cluster_replace_subscribed";
    assert_eq!(a.await_metric(subscribed, 1), 1);
    assert_eq!(b.await_metric(subscribed, 1), 1);
    let mut first = node_park(&a);
    let sent = "tryst_cluster_replace_total{direction=\"sent\"}";
    let received = "tryst_cluster_replace_total{direction=\"received\"}";
    assert_eq!(await_series(&a, sent, 1), 1);
    let mut second = node_park(&b);
    assert_eq!(await_series(&b, sent, 1), 1);
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(read_to_close(&mut first), "", "the older park is closed");
    assert_eq!(series(&a, received), 1);
    // The newer one is still parked: nothing arrives, the relay keeps it open.
    assert_still_parked(&mut second);
}

/// A single-shot tag publisher parked on A is closed when a newer one parks for the same
/// tag on B (its proof's nonce claimed first, then the replace announced); the newer one
/// stays parked.
#[test]
fn a_single_shot_tag_park_on_another_node_replaces_the_older_one() {
    let redis = Redis::start();
    let keys = tempfile::tempdir().unwrap();
    let psk = write_psk(keys.path(), PSK);
    let a = node(&redis, &psk, "a", "127.0.0.2", &[]);
    let b = node(&redis, &psk, "b", "127.0.0.3", &[]);
    await_connected(&a);
    await_connected(&b);
    let subscribed = "tryst_cluster_replace_subscribed";
    assert_eq!(a.await_metric(subscribed, 1), 1);
    assert_eq!(b.await_metric(subscribed, 1), 1);
    wait_past(now_unix());
    let tag = hashed_tag("", &hex::encode(rand::random::<[u8; 16]>()));
    let sent = "tryst_cluster_replace_total{direction=\"sent\"}";
    let received = "tryst_cluster_replace_total{direction=\"received\"}";
    let mut first = tag_park(&a, &tag, &single_shot());
    // Its proof's nonce, then its replace announcement, both before its 200.
    assert_eq!(series(&a, WON), 2);
    assert_eq!(series(&a, sent), 1);
    let mut second = tag_park(&b, &tag, &single_shot());
    assert_eq!(await_series(&b, sent, 1), 1);
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(read_to_close(&mut first), "", "the older park is closed");
    assert_eq!(series(&a, received), 1);
    assert_still_parked(&mut second);
    // Long-term tags queue: their parks announce nothing.
    let long = hashed_tag("", &hex::encode(rand::random::<[u8; 16]>()));
    let _queued = tag_park(&a, &long, &CreateOptions::default());
    assert_eq!(series(&a, WON), 3, "its nonce only");
    assert_eq!(series(&a, sent), 1);
}

/// Runs one `redis-cli` command against `redis`; its output.
fn redis_cli(redis: &Redis, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .arg("-s")
        .arg(&redis.socket)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Publishes `"<prefix> <seq>"` on the replace channel of `redis` as another node
/// would: with the next number of the cluster-wide order.
fn publish_replace(redis: &Redis, prefix: &str) {
    let seq: u64 = redis_cli(redis, &["INCR", "tryst:replace-seq"])
        .parse()
        .unwrap();
    publish_replace_at(redis, prefix, seq);
}

/// Publishes `"<prefix> <seq>"` on the replace channel with a given place in the order.
fn publish_replace_at(redis: &Redis, prefix: &str, seq: u64) {
    redis_cli(
        redis,
        &["PUBLISH", "tryst:replace", &format!("{prefix} {seq}")],
    );
}

/// A replace announcement naming another epoch than its node's live one (a previous
/// run of a restarted node, or a node that is not live) closes nothing and is counted
/// as stale; one older than the node's own park (delivered late: a smaller place in
/// the cluster-wide order) closes nothing and is counted as older; the same
/// announcement in the node's live epoch, newer than the park, closes it.
#[test]
fn a_replace_announcement_of_a_stale_epoch_closes_nothing() {
    let redis = Redis::start();
    let keys = tempfile::tempdir().unwrap();
    let psk = write_psk(keys.path(), PSK);
    let secrets = node_secrets(keys.path());
    let flags = ["--secrets", secrets.to_str().unwrap()];
    let a = node(&redis, &psk, "a", "127.0.0.2", &flags);
    let b = node(&redis, &psk, "b", "127.0.0.3", &flags);
    await_connected(&a);
    assert_eq!(a.await_metric("tryst_cluster_live_nodes", 1), 1);
    assert_eq!(a.await_metric("tryst_cluster_replace_subscribed", 1), 1);
    let mut parked = node_park(&a);
    let parked_as: u64 = redis_cli(&redis, &["GET", "tryst:replace-seq"])
        .parse()
        .unwrap();
    let answer = b.exchange(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let health: serde_json::Value = serde_json::from_str(body).unwrap();
    let epoch = health["cluster"]["epoch"].as_u64().unwrap();
    let key = format!("0:{}", NODE_ID.replace('-', ""));
    let stale = "tryst_cluster_replace_total{direction=\"stale\"}";
    let received = "tryst_cluster_replace_total{direction=\"received\"}";
    // b's previous run, and a node nobody knows.
    publish_replace(&redis, &format!("{key} b {}", epoch - 1));
    publish_replace(&redis, &format!("{key} ghost 1"));
    assert_eq!(await_series(&a, stale, 2), 2);
    assert_eq!(series(&a, received), 0);
    assert_still_parked(&mut parked);
    // b's live run, but announced before a's park (delivered late).
    let older = "tryst_cluster_replace_total{direction=\"older\"}";
    publish_replace_at(&redis, &format!("{key} b {epoch}"), parked_as - 1);
    assert_eq!(await_series(&a, older, 1), 1);
    assert_eq!(series(&a, received), 0);
    assert_still_parked(&mut parked);
    publish_replace(&redis, &format!("{key} b {epoch}"));
    parked
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(read_to_close(&mut parked), "", "closed by b's live run");
    assert_eq!(series(&a, received), 1);
}
