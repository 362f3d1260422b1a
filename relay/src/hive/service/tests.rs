//! The adapter in process: exact statuses and bodies of every refusal, the long poll,
//! replay, the board switch. (Integration tests in relay/tests/it/hive.rs drive a real
//! `tryst serve`.)

use super::*;
use crate::hive::board::BoardLimits;
use crate::hive::forward::{ForwardLimits, proof_message};
use crate::hive::record::{Candidate, Record, format_rfc3339_utc};
use crate::hive::store::StoreLimits;
use crate::hive::verify::sign_publication;
use ed25519_dalek::{Signer as _, SigningKey};
use http_body_util::BodyExt as _;

const WS: [u8; 16] = [0x11; 16];
const DEV: [u8; 16] = [0x22; 16];
const WS_S: &str = "11111111-1111-1111-1111-111111111111";
const DEV_S: &str = "22222222-2222-2222-2222-222222222222";

fn key() -> SigningKey {
    SigningKey::from_bytes(&[5; 32])
}

fn record(device: [u8; 16], published_at: i64, ttl: u32) -> Record {
    Record {
        workspace: WS,
        account: [0x33; 16],
        device,
        signing_key: [0; 32],
        candidates: vec![Candidate {
            kind: "hostLocal".into(),
            host: "10.0.0.1".into(),
            port: 4000,
            priority: 1,
        }],
        published_at: format_rfc3339_utc(published_at),
        ttl_seconds: ttl,
    }
}

fn publication(device: [u8; 16], offset: i64) -> Vec<u8> {
    sign_publication(&key(), &record(device, unix_now_signed() + offset, 300))
}

fn hive(poll: Duration) -> Hive {
    Hive::new(HiveConfig {
        poll_timeout: poll,
        ..HiveConfig::default()
    })
}

async fn call(
    h: &Hive,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(path);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    let resp = h.serve(req, Duration::from_secs(5)).await;
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, ctype, body)
}

fn err(status: u16, reason: &str) -> (u16, String, Vec<u8>) {
    (
        status,
        "application/json".into(),
        serde_json::json!({ "error": reason })
            .to_string()
            .into_bytes(),
    )
}

fn ok() -> (u16, String, Vec<u8>) {
    (200, "application/json".into(), br#"{"ok":true}"#.to_vec())
}

fn drain_auth(ts: i64, nonce: [u8; 16]) -> String {
    let ts = u64::try_from(ts).unwrap();
    let sig = key().sign(&proof_message(DRAIN_DOMAIN, &WS, &DEV, ts, &nonce));
    format!(
        "Hive-Drain ts={ts}, nonce={}, sig={}",
        hex::encode(nonce),
        STANDARD.encode(sig.to_bytes())
    )
}

#[tokio::test]
async fn health_and_unknown_paths() {
    let h = hive(Duration::from_millis(50));
    assert_eq!(
        call(&h, "GET", "/v1/health", &[], b"").await,
        (200, "text/plain".into(), b"ok".to_vec())
    );
    assert_eq!(
        call(&h, "GET", "/v1/nothing", &[], b"").await,
        err(404, "not found")
    );
    assert_eq!(
        call(&h, "GET", "/v1/rendezvous", &[], b"").await,
        err(405, "method not allowed")
    );
}

#[tokio::test]
async fn publish_and_read_back_exactly() {
    let h = hive(Duration::from_millis(50));
    let body = publication(DEV, 0);
    assert_eq!(call(&h, "POST", "/v1/rendezvous", &[], &body).await, ok());
    let path = format!("/v1/rendezvous/{WS_S}/{DEV_S}");
    assert_eq!(
        call(&h, "GET", &path, &[], b"").await,
        (200, "application/json".into(), body.clone())
    );
    // Upper-case path ids name the same bytes.
    let upper = format!("/v1/rendezvous/{WS_S}/{}", DEV_S.to_uppercase());
    assert_eq!(call(&h, "GET", &upper, &[], b"").await.0, 200);
    let other = publication([0x44; 16], 0);
    assert_eq!(call(&h, "POST", "/v1/rendezvous", &[], &other).await, ok());
    let mut want = b"[".to_vec();
    want.extend(&body);
    want.push(b',');
    want.extend(&other);
    want.push(b']');
    assert_eq!(
        call(&h, "GET", &format!("/v1/rendezvous/{WS_S}"), &[], b"").await,
        (200, "application/json".into(), want)
    );
    assert_eq!(
        call(&h, "GET", &format!("/v1/rendezvous/{DEV_S}"), &[], b"").await,
        (200, "application/json".into(), b"[]".to_vec())
    );
    assert_eq!(
        call(
            &h,
            "GET",
            &format!("/v1/rendezvous/{DEV_S}/{DEV_S}"),
            &[],
            b""
        )
        .await,
        err(404, "no fresh publication")
    );
    assert_eq!(
        call(&h, "GET", "/v1/rendezvous/xyz/abc", &[], b"").await,
        err(400, "malformed workspace id")
    );
    assert_eq!(
        call(&h, "GET", &format!("/v1/rendezvous/{WS_S}/abc"), &[], b"").await,
        err(400, "malformed device id")
    );
}

#[tokio::test]
async fn publish_refusals() {
    let h = hive(Duration::from_millis(50));
    let newer = publication(DEV, 0);
    let older = publication(DEV, -10);
    assert_eq!(call(&h, "POST", "/v1/rendezvous", &[], &newer).await, ok());
    assert_eq!(
        call(&h, "POST", "/v1/rendezvous", &[], &older).await,
        err(409, "a newer publication of this device is stored")
    );
    // Identical again: accepted as a no-op.
    assert_eq!(call(&h, "POST", "/v1/rendezvous", &[], &newer).await, ok());
    assert_eq!(
        call(&h, "POST", "/v1/rendezvous", &[], &publication(DEV, 301)).await,
        err(400, "publishedAt out of skew window")
    );
    assert_eq!(
        call(&h, "POST", "/v1/rendezvous", &[], &publication(DEV, -301)).await,
        err(400, "publishedAt out of skew window")
    );
    let mut tampered = newer.clone();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        call(&h, "POST", "/v1/rendezvous", &[], &tampered).await,
        err(400, "bad signature")
    );
    assert_eq!(
        call(&h, "POST", "/v1/rendezvous", &[], b"{}").await,
        err(
            400,
            "malformed record: missing field `record` at line 1 column 2"
        )
    );
    assert_eq!(
        call(
            &h,
            "POST",
            "/v1/rendezvous",
            &[],
            &vec![b' '; MAX_PUBLICATION_BYTES + 1]
        )
        .await,
        err(413, "publication too large")
    );
    // Expired already (published 200 s ago with a 100 s TTL): refused.
    let stale = sign_publication(&key(), &record([0x55; 16], unix_now_signed() - 200, 100));
    assert_eq!(
        call(&h, "POST", "/v1/rendezvous", &[], &stale).await,
        err(400, "publication already expired")
    );
}

#[tokio::test]
async fn store_caps_answer_503() {
    let h = Hive::new(HiveConfig {
        store: StoreLimits {
            max_per_workspace: 1,
            max_total: 10,
        },
        ..HiveConfig::default()
    });
    assert_eq!(
        call(&h, "POST", "/v1/rendezvous", &[], &publication(DEV, 0)).await,
        ok()
    );
    assert_eq!(
        call(
            &h,
            "POST",
            "/v1/rendezvous",
            &[],
            &publication([0x44; 16], 0)
        )
        .await,
        err(503, "workspace publication cap reached")
    );
}

#[tokio::test]
async fn forward_round_trip_and_refusals() {
    let h = hive(Duration::from_millis(100));
    let fwd = format!("/v1/forward/{WS_S}/{DEV_S}");
    assert_eq!(
        call(&h, "POST", &fwd, &[], b"frame").await,
        err(404, "no fresh publication")
    );
    assert_eq!(
        call(&h, "GET", &fwd, &[], b"").await,
        err(404, "no fresh publication")
    );
    assert_eq!(
        call(&h, "POST", "/v1/rendezvous", &[], &publication(DEV, 0)).await,
        ok()
    );
    assert_eq!(
        call(&h, "POST", &fwd, &[], &vec![0; (1 << 20) + 1]).await,
        err(413, "forward body larger than 1 MiB")
    );
    assert_eq!(call(&h, "POST", &fwd, &[], &vec![1; 1 << 20]).await, ok());
    assert_eq!(call(&h, "POST", &fwd, &[], b"second").await, ok());
    // Drain proofs.
    assert_eq!(
        call(&h, "GET", &fwd, &[], b"").await,
        err(401, "drain proof: missing Authorization")
    );
    assert_eq!(
        call(&h, "GET", &fwd, &[("authorization", "Bearer x")], b"").await,
        err(401, "drain proof: wrong scheme")
    );
    let stale = drain_auth(unix_now_signed() - 61, [1; 16]);
    assert_eq!(
        call(&h, "GET", &fwd, &[("authorization", &stale)], b"").await,
        err(401, "drain proof: ts out of window")
    );
    let other_key = {
        let sig = SigningKey::from_bytes(&[6; 32]).sign(&proof_message(
            DRAIN_DOMAIN,
            &WS,
            &DEV,
            u64::try_from(unix_now_signed()).unwrap(),
            &[2; 16],
        ));
        format!(
            "Hive-Drain ts={}, nonce={}, sig={}",
            unix_now_signed(),
            hex::encode([2; 16]),
            STANDARD.encode(sig.to_bytes())
        )
    };
    assert_eq!(
        call(&h, "GET", &fwd, &[("authorization", &other_key)], b"").await,
        err(401, "drain proof: bad signature")
    );
    let auth = drain_auth(unix_now_signed(), [3; 16]);
    let (status, ctype, body) = call(&h, "GET", &fwd, &[("authorization", &auth)], b"").await;
    assert_eq!((status, ctype.as_str()), (200, "application/octet-stream"));
    let mut want = vec![1; 1 << 20];
    want.extend(b"second");
    assert_eq!(body, want);
    // The same proof again: a replay.
    assert_eq!(
        call(&h, "GET", &fwd, &[("authorization", &auth)], b"").await,
        err(401, "drain proof replayed")
    );
    // Empty after the poll timeout: 204.
    let auth = drain_auth(unix_now_signed(), [4; 16]);
    let (status, _, body) = call(&h, "GET", &fwd, &[("authorization", &auth)], b"").await;
    assert_eq!((status, body.len()), (204, 0));
}

#[tokio::test]
async fn a_waiting_drain_is_woken_and_a_second_one_refused() {
    let h = hive(Duration::from_secs(20));
    let fwd = format!("/v1/forward/{WS_S}/{DEV_S}");
    assert_eq!(
        call(&h, "POST", "/v1/rendezvous", &[], &publication(DEV, 0)).await,
        ok()
    );
    let auth = drain_auth(unix_now_signed(), [7; 16]);
    let waiter = {
        let (h, fwd) = (h.clone(), fwd.clone());
        tokio::spawn(async move { call(&h, "GET", &fwd, &[("authorization", &auth)], b"").await })
    };
    // Wait until the drain is registered (the table is the source of truth).
    while h.lock().waiters.is_empty() {
        tokio::task::yield_now().await;
    }
    let auth2 = drain_auth(unix_now_signed(), [8; 16]);
    assert_eq!(
        call(&h, "GET", &fwd, &[("authorization", &auth2)], b"").await,
        err(409, "a drain is already waiting on this mailbox")
    );
    assert!(
        h.render_metrics()
            .contains("\n# TYPE tryst_hive_drains_waiting gauge\ntryst_hive_drains_waiting 1\n")
    );
    assert_eq!(call(&h, "POST", &fwd, &[], b"wake").await, ok());
    assert_eq!(
        waiter.await.unwrap(),
        (200, "application/octet-stream".into(), b"wake".to_vec())
    );
    assert!(h.lock().waiters.is_empty());
}

#[tokio::test]
async fn a_vanished_drain_frees_its_slot() {
    let h = hive(Duration::from_secs(20));
    let fwd = format!("/v1/forward/{WS_S}/{DEV_S}");
    assert_eq!(
        call(&h, "POST", "/v1/rendezvous", &[], &publication(DEV, 0)).await,
        ok()
    );
    let auth = drain_auth(unix_now_signed(), [9; 16]);
    let waiter = {
        let (h, fwd) = (h.clone(), fwd.clone());
        tokio::spawn(async move { call(&h, "GET", &fwd, &[("authorization", &auth)], b"").await })
    };
    while h.lock().waiters.is_empty() {
        tokio::task::yield_now().await;
    }
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    assert!(h.lock().waiters.is_empty());
    assert_eq!(
        h.lock().mailboxes.begin_wait((WS, DEV), unix_now_signed()),
        Ok(())
    );
}

#[tokio::test]
async fn board_is_off_by_default() {
    let off = hive(Duration::from_millis(50));
    let path = "/v1/workspaces/team-1/candidates";
    assert_eq!(
        call(&off, "GET", path, &[], b"").await,
        err(404, "not found")
    );
    assert_eq!(
        call(&off, "POST", path, &[], br#"{"device_id":"d","data":1}"#).await,
        err(404, "not found")
    );
    let on = Hive::new(HiveConfig {
        board: Some(BoardLimits::default()),
        ..HiveConfig::default()
    });
    assert_eq!(
        call(
            &on,
            "POST",
            path,
            &[],
            br#"{"device_id":"d","data":{"a":[1]}}"#
        )
        .await,
        ok()
    );
    assert_eq!(
        call(&on, "GET", path, &[], b"").await,
        (
            200,
            "application/json".into(),
            br#"{"d":{"a":[1]}}"#.to_vec()
        )
    );
    assert_eq!(
        call(&on, "POST", path, &[], br#"{"device_id":"","data":1}"#).await,
        err(400, "device_id must be 1..=128 bytes")
    );
    assert_eq!(
        call(&on, "POST", path, &[], b"[").await,
        err(
            400,
            "invalid JSON body: EOF while parsing a list at line 1 column 1"
        )
    );
    assert_eq!(
        call(&on, "GET", "/v1/workspaces/a%2Fb/candidates", &[], b"").await,
        err(400, "malformed workspace id")
    );
}

#[tokio::test]
async fn export_pages() {
    let h = hive(Duration::from_millis(50));
    let a = publication(DEV, 0);
    assert_eq!(call(&h, "POST", "/v1/rendezvous", &[], &a).await, ok());
    let (status, _, body) = call(&h, "GET", "/v1/rendezvous/mirror?since=0", &[], b"").await;
    assert_eq!(status, 200);
    let epoch = format!("{:016x}", h.inner.epoch);
    let want =
        serde_json::json!({"epoch": epoch, "next": 1, "publications": [STANDARD.encode(&a)]});
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        want
    );
    let (_, _, body) = call(&h, "GET", "/v1/rendezvous/mirror?since=1", &[], b"").await;
    assert_eq!(
        String::from_utf8(body).unwrap(),
        format!(r#"{{"epoch":"{epoch}","next":1,"publications":[]}}"#)
    );
    assert_eq!(export_query(Some("since=5&limit=1")), Ok((5, 1)));
    assert_eq!(export_query(Some("limit=256&x")), Ok((0, MAX_EXPORT_PAGE)));
    assert_eq!(export_query(None), Ok((0, MAX_EXPORT_PAGE)));
    // Issue 12 item 13: out-of-range limits and a non-numeric since are 400s, exactly.
    for (query, reason) in [
        ("since=5&limit=0", "limit must be 1 to 256"),
        ("limit=1000", "limit must be 1 to 256"),
        ("limit=9999&x", "limit must be 1 to 256"),
        ("limit=+5", "limit must be 1 to 256"),
        ("since=abc", "malformed since"),
        ("since=-1", "malformed since"),
        ("since=", "malformed since"),
    ] {
        assert_eq!(export_query(Some(query)), Err(reason), "{query}");
        let path = format!("/v1/rendezvous/mirror?{query}");
        let (status, _, body) = call(&h, "GET", &path, &[], b"").await;
        assert_eq!(
            (status, String::from_utf8(body).unwrap()),
            (400, format!(r#"{{"error":"{reason}"}}"#)),
            "{query}"
        );
    }
}

#[tokio::test]
async fn every_remaining_refusal_has_its_exact_body() {
    let h = Hive::new(HiveConfig {
        store: StoreLimits {
            max_per_workspace: 10,
            max_total: 2,
        },
        forward: ForwardLimits {
            max_mailbox_bytes: 8,
            max_total_bytes: 12,
            max_nonces: 1,
            ..ForwardLimits::default()
        },
        poll_timeout: Duration::from_millis(10),
        board: Some(BoardLimits {
            max_body: 64,
            max_devices: 1,
            ..BoardLimits::default()
        }),
        ..HiveConfig::default()
    });
    // Same publishedAt, different body.
    let at = unix_now_signed();
    let first = sign_publication(&key(), &record(DEV, at, 300));
    let second = sign_publication(&key(), &record(DEV, at, 299));
    assert_eq!(call(&h, "POST", "/v1/rendezvous", &[], &first).await, ok());
    assert_eq!(
        call(&h, "POST", "/v1/rendezvous", &[], &second).await,
        err(
            409,
            "a different publication with the same publishedAt is stored"
        )
    );
    let other = [0x44; 16];
    assert_eq!(
        call(&h, "POST", "/v1/rendezvous", &[], &publication(other, 0)).await,
        ok()
    );
    assert_eq!(
        call(
            &h,
            "POST",
            "/v1/rendezvous",
            &[],
            &publication([0x45; 16], 0)
        )
        .await,
        err(503, "publication store full")
    );
    // Forward caps: 8 bytes per mailbox, 12 in total.
    let fwd = format!("/v1/forward/{WS_S}/{DEV_S}");
    let fwd_other = format!(
        "/v1/forward/{WS_S}/{}",
        "44444444-4444-4444-4444-444444444444"
    );
    assert_eq!(call(&h, "POST", &fwd, &[], b"12345678").await, ok());
    assert_eq!(
        call(&h, "POST", &fwd, &[], b"9").await,
        err(429, "mailbox full")
    );
    assert_eq!(call(&h, "POST", &fwd_other, &[], b"1234").await, ok());
    assert_eq!(
        call(&h, "POST", &fwd_other, &[], b"5").await,
        err(503, "forward storage full")
    );
    // Proof syntax, and the nonce cache (1 entry) refusing when full.
    let n = hex::encode([0u8; 16]);
    let sig = STANDARD.encode([0u8; 64]);
    for (header, reason) in [
        (
            format!("Hive-Drain ts=1, nonce=zz, sig={sig}"),
            "drain proof: malformed nonce",
        ),
        (
            format!("Hive-Drain ts=x, nonce={n}, sig={sig}"),
            "drain proof: malformed ts",
        ),
        (
            format!("Hive-Drain ts=1, nonce={n}, sig=abc"),
            "drain proof: malformed sig",
        ),
        (
            format!("Hive-Drain ts=1, nonce={n}"),
            "drain proof: malformed sig",
        ),
        (
            format!("Hive-Drain ts=1, nonce={n}, sig={sig}, extra=1"),
            "drain proof: malformed parameter",
        ),
    ] {
        assert_eq!(
            call(&h, "GET", &fwd, &[("authorization", &header)], b"").await,
            err(401, reason),
            "{header}"
        );
    }
    let (status, _, body) = call(
        &h,
        "GET",
        &fwd,
        &[("authorization", &drain_auth(unix_now_signed(), [1; 16]))],
        b"",
    )
    .await;
    assert_eq!((status, body), (200, b"12345678".to_vec()));
    assert_eq!(
        call(
            &h,
            "GET",
            &fwd,
            &[("authorization", &drain_auth(unix_now_signed(), [2; 16]))],
            b""
        )
        .await,
        err(503, "drain proof cache full")
    );
    assert_eq!(
        call(&h, "PUT", &fwd, &[], b"").await,
        err(405, "method not allowed")
    );
    // Board caps and body limit.
    let board = "/v1/workspaces/w/candidates";
    assert_eq!(
        call(&h, "POST", board, &[], br#"{"device_id":"a","data":1}"#).await,
        ok()
    );
    assert_eq!(
        call(&h, "POST", board, &[], br#"{"device_id":"b","data":1}"#).await,
        err(503, "candidates board full")
    );
    assert_eq!(
        call(&h, "POST", board, &[], &[b' '; 65]).await,
        err(413, "request body too large")
    );
    assert_eq!(
        call(&h, "DELETE", board, &[], b"").await,
        err(405, "method not allowed")
    );
}

/// Serves `hive` on `listener` with hyper, like the relay's HTTP service does.
async fn serve_on(hive: Hive, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let hive = hive.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let hive = hive.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(hive.serve(req, Duration::from_secs(5)).await)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

/// Two relays mirroring each other: a publication posted to A is pushed to B, B pushes
/// it back once, A finds it unchanged and pushes nothing: no loop.
#[tokio::test]
async fn mutual_mirrors_do_not_loop() {
    let la = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = |l: &tokio::net::TcpListener| {
        crate::hive::mirror::MirrorPeer::parse(&format!("http://{}", l.local_addr().unwrap()))
            .unwrap()
    };
    let config = |mirror| HiveConfig {
        mirrors: vec![mirror],
        mirror_interval: Duration::from_secs(3600),
        ..HiveConfig::default()
    };
    let (pa, pb) = (peer(&la), peer(&lb));
    let a = Hive::new(config(pb));
    let b = Hive::new(config(pa.clone()));
    tokio::spawn(serve_on(a.clone(), la));
    tokio::spawn(serve_on(b.clone(), lb));
    a.start_background();
    b.start_background();
    let body = publication(DEV, 0);
    let answer = crate::hive::mirror::request(&pa, "POST", "/v1/rendezvous", &body)
        .await
        .unwrap();
    assert_eq!(answer, (200, br#"{"ok":true}"#.to_vec()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while b.mirror_counters().pushes_answered.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never pushed back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A answered B's bounce only after deciding not to push it again.
    assert_eq!(a.mirror_counters().pushes_queued.load(Ordering::Relaxed), 1);
    assert_eq!(b.mirror_counters().pushes_queued.load(Ordering::Relaxed), 1);
    assert_eq!(
        a.mirror_counters().pushes_answered.load(Ordering::Relaxed),
        1
    );
    let got = b.lock().store.get(&WS, &DEV, unix_now_signed()).unwrap();
    assert_eq!(got.body, body);
    assert!(
        a.render_metrics()
            .contains("\ntryst_hive_mirror_pushes_total 1\n")
    );
}

/// A pull imports what verifies, resumes from its cursor, and starts over when the
/// peer's epoch changed (it restarted and its sequence numbers began again).
#[tokio::test]
async fn pulls_follow_the_cursor_and_restart_on_a_new_epoch() {
    use crate::hive::mirror::{MirrorPeer, PullCursor, pull_once};
    let la = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = MirrorPeer::parse(&format!("http://{}", la.local_addr().unwrap())).unwrap();
    let a = hive(Duration::from_millis(50));
    tokio::spawn(serve_on(a.clone(), la));
    let p1 = publication(DEV, 0);
    assert_eq!(call(&a, "POST", "/v1/rendezvous", &[], &p1).await, ok());

    let b = hive(Duration::from_millis(50));
    let cursor = pull_once(&b, &peer, PullCursor::default()).await;
    let epoch = format!("{:016x}", a.inner.epoch);
    assert_eq!(
        cursor,
        PullCursor {
            epoch: epoch.clone(),
            since: 1
        }
    );
    assert_eq!(
        b.lock()
            .store
            .get(&WS, &DEV, unix_now_signed())
            .unwrap()
            .body,
        p1
    );
    assert_eq!(b.mirror_counters().pulled.load(Ordering::Relaxed), 1);
    // Nothing new: same cursor, nothing imported.
    let again = pull_once(&b, &peer, cursor.clone()).await;
    assert_eq!(again, cursor);
    assert_eq!(b.mirror_counters().pulled.load(Ordering::Relaxed), 1);

    // A fresh relay C with a cursor from another epoch far ahead: starts over.
    let c = hive(Duration::from_millis(50));
    let stale = PullCursor {
        epoch: "0000000000000000".into(),
        since: 1,
    };
    let cursor = pull_once(&c, &peer, stale).await;
    assert_eq!(cursor, PullCursor { epoch, since: 1 });
    assert_eq!(
        c.lock()
            .store
            .get(&WS, &DEV, unix_now_signed())
            .unwrap()
            .body,
        p1
    );
}
