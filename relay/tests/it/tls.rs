//! The TLS listener: the same rendezvous over rustls-terminated connections, with the
//! generated self-signed certificate as the client's only trust anchor (pinning).

use crate::relay::Relay;
use crate::tunnel::{ID, OK, exchange_at, nonce, now_unix, park_head, read_exact_n};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn start() -> Relay {
    Relay::start(&["--tls-listen", "127.0.0.1:0", "--head-timeout", "2s"])
}

fn client_config(relay: &Relay) -> Arc<rustls::ClientConfig> {
    pinned_config(&relay.data_dir().join("tls-cert.pem"))
}

pub(crate) fn tls_connect(relay: &Relay) -> Tls {
    let addr = relay.tls_addr.unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(client_config(relay), name).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

fn read_n(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

fn tls_park(relay: &Relay) -> Tls {
    let mut s = tls_connect(relay);
    s.write_all(park_head(now_unix(), &nonce()).as_bytes())
        .unwrap();
    assert_eq!(read_n(&mut s, OK.len()), OK);
    s
}

/// A TLS client's reach with `early` bytes in the same write as its head; returns once
/// the relay answered 200 (the TLS twin of `reach_at`).
fn tls_reach(relay: &Relay, early: &[u8]) -> Tls {
    let mut s = tls_connect(relay);
    let mut head = tryst_client::heads::reach_head(ID).into_bytes();
    head.extend_from_slice(early);
    s.write_all(&head).unwrap();
    assert_eq!(read_n(&mut s, OK.len()), OK);
    s
}

#[test]
fn tls_hidden_server_and_tls_client_move_a_mebibyte_each_way() {
    let relay = start();
    let mut server = tls_park(&relay);
    let mut client = tls_reach(&relay, b"");
    let up: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7) as u8).collect();
    let down: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 13 + 5) as u8).collect();
    // One thread per direction on each TLS stream is not possible (a rustls stream is
    // not split), so interleave: send in chunks and read what arrives.
    for (chunk_up, chunk_down) in up.chunks(64 * 1024).zip(down.chunks(64 * 1024)) {
        client.write_all(chunk_up).unwrap();
        server.write_all(chunk_down).unwrap();
        assert!(
            read_n(&mut server, chunk_up.len()) == chunk_up,
            "client->server differs"
        );
        assert!(
            read_n(&mut client, chunk_down.len()) == chunk_down,
            "server->client differs"
        );
    }
    client.conn.send_close_notify();
    client.flush().unwrap();
    let mut rest = Vec::new();
    let _ = server.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert!(relay.metric("tryst_tls_sessions") >= 1);
}

#[test]
fn a_plain_client_reaches_a_hidden_server_parked_over_tls() {
    let relay = start();
    let mut server = tls_park(&relay);
    let mut client = relay.reach(b"hello");
    assert_eq!(read_n(&mut server, 5), b"hello");
    server.write_all(b"world").unwrap();
    assert_eq!(read_exact_n(&mut client, 5), b"world");
    client.shutdown(Shutdown::Write).unwrap();
}

/// Sixteen mebibytes one way, then sixteen back, between a hidden server parked over TLS
/// and a plain client, each side writing without waiting for the other to read: the
/// front's buffers fill and drain many times, records span its large reads, and each
/// side's end of stream arrives after the last byte (close_notify one way, FIN the other).
#[test]
fn sixteen_mebibytes_each_way_through_a_tls_front_with_back_pressure() {
    let relay = start();
    let mut server = tls_park(&relay);
    let mut client = relay.reach(b"");
    let writer = client.try_clone().unwrap();
    stream_whole(writer, &mut server, up_bytes(), "client->server", |w| {
        w.shutdown(Shutdown::Write).unwrap();
    });
    stream_whole(
        server,
        &mut client,
        down_bytes(),
        "server->client",
        close_tls,
    );
}

/// The sixteen mebibytes of the back-pressure tests, one way and the other: patterns that
/// do not repeat within a TLS record or a pipe.
fn up_bytes() -> Vec<u8> {
    (0..BIG).map(|i| (i * 31 + i / 4093) as u8).collect()
}

fn down_bytes() -> Vec<u8> {
    (0..BIG).map(|i| (i * 17 + 3 + i / 8191) as u8).collect()
}

const BIG: usize = 16 << 20;

/// Writes `sent` with `writer` on its own thread, then ends its stream with `finish`,
/// while `reader` reads to its end on this one (neither waits for the other); asserts
/// every byte arrived, in order, and gives the writer back.
fn stream_whole<W: Write + Send + 'static>(
    mut writer: W,
    reader: &mut impl Read,
    sent: Vec<u8>,
    what: &str,
    finish: fn(&mut W),
) -> W {
    let len = sent.len();
    let expected = sent.clone();
    let writing = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        finish(&mut writer);
        writer
    });
    let mut got = Vec::with_capacity(len);
    reader.read_to_end(&mut got).unwrap();
    let writer = writing.join().unwrap();
    assert_eq!(got.len(), len, "{what}");
    assert!(got == expected, "{what} differs");
    writer
}

/// Ends a TLS stream: close_notify, flushed.
fn close_tls(s: &mut Tls) {
    s.conn.send_close_notify();
    s.flush().unwrap();
}

#[test]
fn refusals_and_http_work_inside_tls() {
    let relay = start();
    let mut s = tls_connect(&relay);
    s.write_all(b"GARBAGE\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
    let mut s = tls_connect(&relay);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_stalled_handshake_delays_nobody_and_is_closed_at_the_deadline() {
    let relay = start();
    let started = Instant::now();
    let mut stalled = TcpStream::connect(relay.tls_addr.unwrap()).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // Others are served meanwhile.
    let _server = tls_park(&relay);
    assert!(started.elapsed() < Duration::from_secs(2));
    // The stalled one is closed once the head deadline passes.
    let mut out = Vec::new();
    let _ = stalled.read_to_end(&mut out);
    // At most a TLS alert record (content type 21) precedes the close.
    assert!(
        out.is_empty() || out[0] == 21,
        "expected a close, got {out:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(1900));
}

fn pinned_config(cert_pem: &std::path::Path) -> Arc<rustls::ClientConfig> {
    let pem = std::fs::read(cert_pem).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Completes a handshake (and a full request) under `config`, or says why not.
fn healthz_over(relay: &Relay, config: Arc<rustls::ClientConfig>) -> Result<String, String> {
    let tcp = TcpStream::connect(relay.tls_addr.unwrap()).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => Ok(String::from_utf8_lossy(&out).into_owned()),
        Err(e) if !out.is_empty() => {
            Ok(String::from_utf8_lossy(&out).into_owned() + &e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn sighup_rotates_the_certificate_without_dropping_parked_connections() {
    use tryst_relay::config::TlsConfig;
    let work = tempfile::tempdir().unwrap();
    let make = |sub: &str| {
        let dir = work.path().join(sub);
        std::fs::create_dir(&dir).unwrap();
        let t = TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert_and_key: None,
            name: "127.0.0.1".into(),
        };
        tryst_relay::tls::load(&t, &dir, true).unwrap();
        (dir.join("tls-cert.pem"), dir.join("tls-key.pem"))
    };
    let (cert_a, key_a) = make("a");
    let (cert_b, key_b) = make("b");
    let cert = work.path().join("cert.pem");
    let key = work.path().join("key.pem");
    std::fs::copy(&cert_a, &cert).unwrap();
    std::fs::copy(&key_a, &key).unwrap();
    let relay = Relay::start(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    // A hidden server parked over TLS under certificate A.
    let a = pinned_config(&cert_a);
    let tcp = TcpStream::connect(relay.tls_addr.unwrap()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut parked =
        rustls::StreamOwned::new(rustls::ClientConnection::new(a.clone(), name).unwrap(), tcp);
    parked
        .write_all(park_head(now_unix(), &nonce()).as_bytes())
        .unwrap();
    assert_eq!(read_n(&mut parked, OK.len()), OK);
    assert!(
        healthz_over(&relay, pinned_config(&cert_b)).is_err(),
        "B trusted before rotation"
    );

    // Rotate: new files in place, then SIGHUP to the supervisor.
    std::fs::copy(&cert_b, &cert).unwrap();
    std::fs::copy(&key_b, &key).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(relay.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    // New connections get certificate B once every worker has reloaded.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut consecutive = 0;
    while consecutive < 8 {
        assert!(Instant::now() < deadline, "certificate B never served");
        match healthz_over(&relay, pinned_config(&cert_b)) {
            Ok(r) if r.starts_with("HTTP/1.1 200") => consecutive += 1,
            _ => consecutive = 0,
        }
    }
    // The connection parked under A is still parked and reachable.
    let mut client = relay.reach(b"after rotation");
    assert_eq!(read_n(&mut parked, 14), b"after rotation");
    parked.write_all(b"ok").unwrap();
    assert_eq!(read_exact_n(&mut client, 2), b"ok");
}

/// Status line and body of an HTTP response (headers such as `date` vary).
fn status_and_body(response: &str) -> (String, String) {
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

fn tls_get(relay: &Relay, path: &str) -> String {
    let mut s = tls_connect(relay);
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Issue 12 item 3: with `--metrics-listen`, `/metrics` and `/healthz` are served there
/// (and nothing else is), and the public listeners, plain and TLS, answer `/metrics` as
/// they answer an unknown path.
#[test]
fn metrics_listen_takes_metrics_off_the_public_listeners() {
    let relay = Relay::start(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let ops = relay.metrics_addr.expect("a metrics listening line");
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let metrics = exchange_at(ops, get("/metrics").as_bytes());
    assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
    assert!(metrics.contains("\ntryst_worker_up{"), "{metrics}");
    let health = exchange_at(ops, get("/healthz").as_bytes());
    assert_eq!(
        status_and_body(&health),
        ("HTTP/1.1 200 OK".into(), r#"{"status":"ok"}"#.into())
    );
    // The operators' port serves no family's API.
    assert_eq!(
        status_and_body(&exchange_at(ops, get("/pubkey").as_bytes())),
        (
            "HTTP/1.1 404 Not Found".to_owned(),
            r#"{"error":{"code":"not_found","message":"no such endpoint"}}"#.to_owned(),
        )
    );
    // The public listeners answer /metrics as they answer an unknown path: on the plain
    // one the hivemind dead-drop's 404, on TLS node-rendezvous's Digest challenge.
    let hivemind = (
        "HTTP/1.1 404 Not Found".to_owned(),
        r#"{"reason":"not_found","status":"error"}"#.to_owned(),
    );
    assert_eq!(
        status_and_body(&relay.exchange(get("/metrics").as_bytes())),
        hivemind
    );
    assert_eq!(
        status_and_body(&relay.exchange(get("/nope").as_bytes())),
        hivemind
    );
    let challenge = ("HTTP/1.1 401 Unauthorized".to_owned(), String::new());
    assert_eq!(status_and_body(&tls_get(&relay, "/metrics")), challenge);
    assert_eq!(status_and_body(&tls_get(&relay, "/nope")), challenge);
    // /healthz stays public (load balancers probe it) on both.
    assert!(
        relay
            .exchange(get("/healthz").as_bytes())
            .starts_with("HTTP/1.1 200")
    );
    assert!(tls_get(&relay, "/healthz").starts_with("HTTP/1.1 200"));
}

/// As `hardening.rs`'s half-closed stall test, through a TLS front: the client half-closes
/// and stops reading while the hidden server (over TLS) keeps sending.
#[test]
fn a_stalled_half_closed_client_costs_a_tls_front_no_cpu() {
    let relay = start();
    let server = tls_park(&relay);
    crate::hardening::stall_a_half_closed_client(&relay, server);
}

/// A relay with one worker: every TLS connection's front is in the worker that pairs
/// it, so a tunnel between two TLS connections is fused (no socketpair, no splice).
fn start_one_worker() -> Relay {
    Relay::builder()
        .workers(1)
        .args(["--tls-listen", "127.0.0.1:0", "--head-timeout", "2s"])
        .start()
}

/// Both legs over TLS in one worker: the fronts are fused. The client's early bytes
/// (sent with its head) and the park's `200` still arrive in order; sixteen mebibytes
/// go one way and then the other without either reader keeping up (the sessions'
/// buffers fill and drain many times); each side's close_notify reaches the other after
/// its last byte, and the other direction keeps flowing after the first ends.
#[test]
fn two_tls_fronts_in_one_worker_are_fused_and_move_sixteen_mebibytes_each_way() {
    let relay = start_one_worker();
    let mut server = tls_park(&relay);
    let client = tls_reach(&relay, b"early");
    assert_eq!(read_n(&mut server, 5), b"early");
    assert_eq!(relay.metric("tryst_tls_fused_total"), 1);
    assert_eq!(relay.metric("tryst_active_tunnels"), 1);
    let mut client = stream_whole(client, &mut server, up_bytes(), "client->server", close_tls);
    stream_whole(
        server,
        &mut client,
        down_bytes(),
        "server->client",
        close_tls,
    );
    // Both directions ended: the pair is closed and nothing is left open.
    assert_eq!(relay.await_metric("tryst_active_tunnels", 0), 0);
    assert_eq!(relay.await_metric("tryst_tls_sessions", 0), 0);
}

/// A fused pair ends like a spliced tunnel on a reset: the other side is closed too.
#[test]
fn a_reset_on_one_side_of_a_fused_pair_closes_the_other() {
    let relay = start_one_worker();
    let mut server = tls_park(&relay);
    let mut client = tls_reach(&relay, b"");
    client.write_all(b"x").unwrap();
    assert_eq!(read_n(&mut server, 1), b"x");
    assert_eq!(relay.metric("tryst_tls_fused_total"), 1);
    // The client's TCP is reset mid-tunnel (no close_notify).
    socket2::SockRef::from(&client.sock)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    let mut rest = Vec::new();
    // The server sees its connection end (reset or EOF), not a hang.
    let _ = server.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(relay.await_metric("tryst_active_tunnels", 0), 0);
    assert_eq!(relay.await_metric("tryst_tls_sessions", 0), 0);
}
