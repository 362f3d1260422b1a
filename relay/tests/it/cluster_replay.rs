//! The HTTP families' proof replay caches across nodes (issue #16): a proof one node
//! accepted is refused by every other node with the family's exact replay refusal (Hive
//! `Hive-Drain`, Qredo `OwnershipSignature`, dead-drop retrieve and ack proofs), and with
//! the directory down each node's own cache decides, counted in
//! `tryst_cluster_replay_fallback_total`. Three nodes and a private `redis-server`
//! (cluster_http.rs's `three`, on cluster.rs's `TestRedis` and `start_node`).

use crate::cluster_http::{drain_auth, forward_path, publish, request, status, three};
use crate::deaddrop::{Identity, now, post, relay_pem};
use crate::qredo::{APP, APP_SECRET_HEX, failed, post_raw};
use crate::relay::Relay;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use std::process::Command;
use tryst_relay::qredo::lf::{self, Limits, Outcome, Record};
use tryst_relay::qredo::ownership::{Op, sign};

fn replay_series(node: &Relay, scope: &str, outcome: &str) -> u64 {
    crate::tunnel::series_value(
        &node.metrics(),
        &format!("tryst_cluster_replay_total{{scope=\"{scope}\",outcome=\"{outcome}\"}}"),
    )
}

fn fallbacks(node: &Relay, scope: &str) -> u64 {
    crate::tunnel::series_value(
        &node.metrics(),
        &format!("tryst_cluster_replay_fallback_total{{scope=\"{scope}\"}}"),
    )
}

/// A drain proof accepted by the mailbox's owner B is refused by C once B is dead and
/// C has taken the mailbox over (before: C's replay cache had never seen it, and the
/// proof drained the mailbox a second time).
#[test]
fn a_drain_proof_replayed_after_its_mailbox_moved_is_refused() {
    let n = three(&["--forward-poll-timeout", "1s"]);
    let (a, b, c) = (&n.nodes[0], &n.nodes[1], &n.nodes[2]);
    publish(a, 5);
    let (head, _) = request(b.addr, "POST", &forward_path(5), &[], b"first");
    assert_eq!(status(&head), 200, "{head}");
    let auth = drain_auth(5);
    let drain = |node: &Relay| {
        request(
            node.addr,
            "GET",
            &forward_path(5),
            &[("Authorization", &auth)],
            b"",
        )
    };
    let (head, got) = drain(b);
    assert_eq!((status(&head), got.as_slice()), (200, &b"first"[..]));
    assert_eq!(replay_series(b, "hive-drain", "first"), 1);

    let killed = Command::new("kill")
        .args(["-9", &b.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(c.await_metric("tryst_cluster_live_nodes", 1), 1);
    let (head, _) = request(c.addr, "POST", &forward_path(5), &[], b"second");
    assert_eq!(status(&head), 200, "{head}");
    let (head, got) = drain(c);
    assert_eq!(
        (status(&head), got.as_slice()),
        (401, &br#"{"error":"drain proof replayed"}"#[..])
    );
    assert_eq!(replay_series(c, "hive-drain", "replayed"), 1);
    // A fresh proof drains what the replay could not.
    let fresh = drain_auth(5);
    let (head, got) = request(
        c.addr,
        "GET",
        &forward_path(5),
        &[("Authorization", &fresh)],
        b"",
    );
    assert_eq!((status(&head), got.as_slice()), (200, &b"second"[..]));
}

/// A Qredo `publish` whose `OwnershipSignature` node A accepted is refused by node B
/// with the exact `ReplayedSignature` failure a local replay gets (B's own queue and
/// replay cache never saw it).
#[test]
fn a_qredo_ownership_signature_replayed_on_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("apps.toml");
    std::fs::write(&apps, format!("[apps]\n\"{APP}\" = \"{APP_SECRET_HEX}\"\n")).unwrap();
    let n = three(&["--qredo-apps", apps.to_str().unwrap()]);
    let (a, b) = (&n.nodes[0], &n.nodes[1]);
    let secret = hex::decode(APP_SECRET_HEX).unwrap();
    let queue = SigningKey::from_bytes(&rand::random());
    let item = lf::Value::Record(Record::new(
        "EncryptedConversationItem",
        vec![
            ("authCode", lf::Value::Bytes(vec![1; 32])),
            ("encryptedMessage", lf::Value::Bytes(b"sealed".to_vec())),
        ],
    ));
    let sig = sign(
        &queue,
        Op::Create,
        &item.encode(),
        &rand::random::<[u8; 16]>(),
        i64::try_from(tryst_relay::clock::unix_now_ms()).unwrap(),
    );
    let args = vec![lf::Value::Quid(queue.verifying_key().to_bytes()), item, sig];
    let body = crate::qredo::request("Conversations", "publish", &secret, args).encode();
    let outcome = |node: &Relay| {
        let (code, reply) = post_raw(node.addr, &body);
        assert_eq!(code, 200);
        lf::decode_response(&reply, &Limits::default())
            .unwrap()
            .outcome
    };
    assert!(matches!(outcome(a), Outcome::Success(_)));
    let replayed = failed(1009, "replayed_signature", "replayed ownership signature");
    assert_eq!(outcome(b), replayed);
    assert_eq!(outcome(a), replayed, "a local replay, for comparison");
    assert_eq!(replay_series(b, "qredo", "replayed"), 1);
    assert_eq!(replay_series(a, "qredo", "first"), 1);
}

/// Three nodes serving one dead-drop identity (the same `--deaddrop-key`; with the
/// PostgreSQL store the key is shared anyway), and the directory.
fn deaddrop_nodes(key: &std::path::Path) -> crate::cluster_http::Nodes {
    three(&["--deaddrop-key", key.to_str().unwrap()])
}

fn retrieve(node: &Relay, proof: &Value) -> (u16, Value) {
    post(node.addr, "/retrieve", proof)
}

/// A retrieve proof (and an ack proof) node A accepted is refused by B and C with the
/// exact `401 replay_detected` of a local replay: with a shared store the replay would
/// have deleted mail.
#[test]
fn a_deaddrop_proof_replayed_on_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let n = deaddrop_nodes(&dir.path().join("deaddrop-key.pem"));
    let (a, b, c) = (&n.nodes[0], &n.nodes[1], &n.nodes[2]);
    let pem = relay_pem(a.addr);
    assert_eq!(relay_pem(c.addr), pem, "one identity");
    let bob = Identity::fixture("client");
    let proof = bob.proof(&pem, now() + 1);
    let empty = json!({"status": "ok", "messages": []});
    let replay = json!({"status": "error", "reason": "replay_detected"});
    assert_eq!(retrieve(a, &proof), (200, empty.clone()));
    assert_eq!(retrieve(b, &proof), (401, replay.clone()));
    assert_eq!(retrieve(c, &proof), (401, replay.clone()));
    assert_eq!(retrieve(a, &proof), (401, replay.clone()), "local");
    let mut ack = bob.proof(&pem, now() + 1);
    ack["deposit_ids"] = json!([]);
    assert_eq!(post(c.addr, "/ack", &ack).0, 200);
    assert_eq!(post(a.addr, "/ack", &ack), (401, replay));
    assert_eq!(replay_series(b, "deaddrop", "replayed"), 1);
    assert_eq!(
        crate::tunnel::series_value(&b.metrics(), "tryst_deaddrop_replays_total"),
        1
    );
}

/// Redis down: every node's own replay cache decides (a proof used on A is accepted
/// once on B, a replay on A is still refused), counted per node in
/// `tryst_cluster_replay_fallback_total`; Redis back (empty): proofs are checked on
/// every node again.
#[test]
fn with_the_directory_down_proofs_fall_back_to_each_node_s_cache_then_recover() {
    let dir = tempfile::tempdir().unwrap();
    let n = deaddrop_nodes(&dir.path().join("deaddrop-key.pem"));
    let (a, b) = (&n.nodes[0], &n.nodes[1]);
    let pem = relay_pem(a.addr);
    let bob = Identity::fixture("client");
    let empty = json!({"status": "ok", "messages": []});
    let replay = json!({"status": "error", "reason": "replay_detected"});

    n.redis.stop();
    for node in &n.nodes {
        assert_eq!(node.await_metric("tryst_cluster_directory_connected", 0), 0);
    }
    let proof = bob.proof(&pem, now() + 1);
    assert_eq!(retrieve(a, &proof), (200, empty.clone()));
    assert_eq!(retrieve(a, &proof), (401, replay.clone()), "local");
    assert_eq!(retrieve(b, &proof), (200, empty.clone()), "the fallback");
    assert_eq!(fallbacks(a, "deaddrop"), 1);
    assert_eq!(fallbacks(b, "deaddrop"), 1);

    n.redis.start_again();
    for node in &n.nodes {
        assert_eq!(node.await_metric("tryst_cluster_directory_connected", 1), 1);
    }
    let proof = bob.proof(&pem, now() + 1);
    assert_eq!(retrieve(b, &proof), (200, empty));
    assert_eq!(retrieve(a, &proof), (401, replay));
    assert_eq!(fallbacks(a, "deaddrop"), 1);
}
