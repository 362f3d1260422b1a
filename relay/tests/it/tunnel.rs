//! End-to-end tests of `tryst serve` over loopback: parking, pairing, the splice data
//! path, half-close, resets, and every refusal named in the engine issue.
//!
//! Each test starts its own relay on an ephemeral port with its own data directory.
//! Waiting is done on events (a read returning, a process exiting); the only polling is
//! for counters the workers publish, bounded by a deadline.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tryst_client::heads::{park_head as client_park_head, reach_head};
use tryst_engine::auth::Secret;
use tryst_engine::target::RendezvousId;

pub(crate) const ID: &str = "0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f";
pub(crate) const SECRET: [u8; 32] = [7; 32];
pub(crate) const OK: &[u8] = b"HTTP/1.1 200\r\n\r\n";

use crate::relay::Relay;

pub(crate) fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn write_secrets(dir: &Path) {
    let text = format!("[secrets]\n\"{ID}\" = \"{}\"\n", b64url(&SECRET));
    let path = dir.join("secrets.toml");
    std::fs::write(&path, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

pub(crate) fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The value of one exact series (its name and labels as rendered, e.g.
/// `tryst_stun_dropped_total{reason="malformed"}`); panics if it is missing.
pub(crate) fn series_value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in {text}"))
        .parse()
        .unwrap()
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Waits (bounded) until the wall clock has left unix second `second`. A relay or a
/// restarted worker refuses proofs stamped in the second it started (docs/reliability.md),
/// so a test that needs a proof accepted after a restart, or one stamped after a start,
/// waits for the clock instead of assuming it moved.
pub(crate) fn wait_past(second: u64) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while now_unix() <= second {
        assert!(
            Instant::now() < deadline,
            "the clock did not move past {second}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(crate) fn nonce() -> Vec<u8> {
    (0..16).map(|_| rand::random::<u8>()).collect()
}

/// A native park head, built by tryst-client (what `tryst expose` sends).
pub(crate) fn park_head_with(secret: &[u8], ts: u64, nonce: &[u8]) -> String {
    let id = RendezvousId::parse(ID).unwrap();
    client_park_head(&id, &Secret::new(secret.to_vec()), ts, nonce)
}

pub(crate) fn park_head(ts: u64, nonce: &[u8]) -> String {
    park_head_with(&SECRET, ts, nonce)
}

pub(crate) fn read_exact_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

/// Sends raw bytes to `addr` and returns everything answered until it closes.
pub(crate) fn exchange_at(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    read_to_close(&mut s)
}

pub(crate) fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The status and the JSON error `code` of a refusal (`0` and `""` when absent).
pub(crate) fn status_and_code(response: &str) -> (u16, String) {
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let code = response
        .split("\"code\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
        .to_owned();
    (status, code)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn both_ways(relay: &Relay) {
    let mut server = relay.park();
    let mut client = relay.reach(b"");
    let up = pattern(1 << 20, 1);
    let down = pattern(1 << 20, 2);
    let writer = {
        let mut server = server.try_clone().unwrap();
        let down = down.clone();
        std::thread::spawn(move || server.write_all(&down).unwrap())
    };
    let reader = {
        let mut client = client.try_clone().unwrap();
        std::thread::spawn(move || read_exact_n(&mut client, 1 << 20))
    };
    client.write_all(&up).unwrap();
    assert!(
        read_exact_n(&mut server, 1 << 20) == up,
        "client->server bytes differ"
    );
    writer.join().unwrap();
    assert!(
        reader.join().unwrap() == down,
        "server->client bytes differ"
    );
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut server), "");
    server.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut client), "");
}

#[test]
fn park_pair_and_one_mebibyte_each_way_through_splice() {
    let relay = Relay::start(&[]);
    both_ways(&relay);
    assert!(relay.metric("tryst_bytes_spliced_total") >= 2 << 20);
    assert_eq!(relay.metric("tryst_paired_total"), 1);
}

#[test]
fn uring_splice_data_path_moves_the_same_bytes() {
    let relay = Relay::start(&["--data-path", "splice-uring"]);
    both_ways(&relay);
    assert!(relay.metric("tryst_bytes_spliced_total") >= 2 << 20);
}

#[test]
fn bytes_after_the_client_head_arrive_first_and_in_order() {
    let relay = Relay::start(&[]);
    let mut server = relay.park();
    let mut client = relay.reach(b"early-bytes|");
    client.write_all(b"later-bytes").unwrap();
    assert_eq!(read_exact_n(&mut server, 23), b"early-bytes|later-bytes");
    drop(client);
}

/// A client whose reach (with `early` bytes) waits in the room: returned once the relay
/// counts it waiting, before any answer.
fn waiting_client(relay: &Relay, early: &[u8]) -> TcpStream {
    let mut client = relay.connect();
    let mut head = reach_head(ID).into_bytes();
    head.extend_from_slice(early);
    client.write_all(&head).unwrap();
    assert_eq!(relay.await_metric("tryst_waiting", 1), 1);
    client
}

#[test]
fn client_waiting_before_the_server_parks_is_paired() {
    let relay = Relay::start(&["--client-wait", "10s"]);
    let mut client = waiting_client(&relay, b"waited");
    let mut server = relay.park();
    assert_eq!(read_exact_n(&mut client, OK.len()), OK);
    assert_eq!(read_exact_n(&mut server, 6), b"waited");
}

#[test]
fn half_close_is_forwarded_in_each_direction() {
    let relay = Relay::start(&[]);
    let mut server = relay.park();
    let mut client = relay.reach(b"");
    client.write_all(b"question").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    // The server sees the bytes then EOF, and can still answer.
    assert_eq!(read_to_close(&mut server), "question");
    server.write_all(b"answer").unwrap();
    server.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut client), "answer");
}

#[test]
fn reset_mid_transfer_closes_both_sides_and_frees_their_sockets() {
    let relay = Relay::start(&[]);
    let baseline = relay.await_metric("tryst_active_tunnels", 0);
    assert_eq!(baseline, 0);
    let sockets_before = relay.metric("tryst_sockets");
    let mut server = relay.park();
    let client = relay.reach(b"");
    (&client).write_all(&pattern(64 * 1024, 3)).unwrap();
    let _ = read_exact_n(&mut server, 1024);
    // Reset the client: linger 0 then close.
    let sock = socket2::SockRef::from(&client);
    sock.set_linger(Some(Duration::ZERO)).unwrap();
    drop(client);
    // The server's side is closed too: its reads end (EOF or reset) instead of hanging.
    let mut rest = Vec::new();
    let _ = server.read_to_end(&mut rest);
    assert_eq!(relay.await_metric("tryst_active_tunnels", 0), 0);
    assert_eq!(
        relay.await_metric("tryst_sockets", sockets_before),
        sockets_before
    );
}

#[test]
fn parked_server_hanging_up_frees_its_slot_at_once() {
    let relay = Relay::start(&[]);
    let server = relay.park();
    assert_eq!(relay.await_metric("tryst_parked", 1), 1);
    drop(server);
    assert_eq!(relay.await_metric("tryst_parked", 0), 0);
    // A client now finds nobody parked.
    let response = relay.exchange(reach_head(ID).as_bytes());
    assert_eq!(status_and_code(&response), (404, "not_parked".into()));
}

#[test]
fn parked_connections_pair_in_fifo_order() {
    let relay = Relay::start(&[]);
    let mut first = relay.park();
    let mut second = relay.park();
    first.write_all(b"").unwrap();
    let mut c1 = relay.reach(b"1");
    let mut c2 = relay.reach(b"2");
    assert_eq!(read_exact_n(&mut first, 1), b"1");
    assert_eq!(read_exact_n(&mut second, 1), b"2");
    drop((c1.flush(), c2.flush()));
}

#[test]
fn over_the_per_id_cap_the_oldest_parked_connection_is_closed() {
    let relay = Relay::start(&["--max-parked-per-id", "2"]);
    let mut oldest = relay.park();
    let _second = relay.park();
    let _third = relay.park();
    assert_eq!(read_to_close(&mut oldest), "");
    assert_eq!(relay.await_metric("tryst_parked", 2), 2);
}

#[test]
fn no_parked_server_answers_404_after_the_client_wait() {
    let relay = Relay::start(&[]);
    let started = Instant::now();
    let response = relay.exchange(reach_head(ID).as_bytes());
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "answered before the wait"
    );
    assert!(
        response.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{response}"
    );
    assert!(response.ends_with(
        r#"{"error":{"code":"not_parked","message":"no hidden server parked under this id"}}"#
    ));
}

#[test]
fn bad_proofs_are_refused_with_exact_codes() {
    let relay = Relay::start(&[]);
    // Each head is stamped just before it is sent, so a slow machine cannot move a
    // just-out-of-window `ts` back into the window. Both clocks are read in whole seconds,
    // so the stale stamps sit 2 s past the 60 s window (1 s past could be read as 60 s
    // by a relay whose second ticked over in between); the exact boundary is
    // unit-tested in engine/src/auth.rs with an injected `now`.
    type Head = fn(u64) -> String;
    let cases: Vec<(Head, (u16, &str))> = vec![
        (
            |now| park_head_with(&[9; 32], now, &nonce()),
            (403, "bad_proof"),
        ),
        (
            |now| park_head(now - 62, &nonce()),
            (403, "stale_timestamp"),
        ),
        (
            |now| park_head(now + 62, &nonce()),
            (403, "stale_timestamp"),
        ),
        (
            |_| format!("CONNECT uuid:{ID} HTTP/1.1\r\nProxy-Authorization: Tryst ts=1\r\n\r\n"),
            (400, "malformed_proof"),
        ),
        (
            |_| format!("CONNECT uuid:{ID} HTTP/1.1\r\nProxy-Authorization: Basic eDp5\r\n\r\n"),
            (400, "malformed_proof"),
        ),
    ];
    for (head, (status, code)) in cases {
        let request = head(now_unix());
        let response = relay.exchange(request.as_bytes());
        assert_eq!(
            status_and_code(&response),
            (status, code.to_owned()),
            "{request}"
        );
    }
    // Unknown id: same answer as a bad MAC.
    let other = "11111111-2222-4333-8444-555555555555";
    let id = RendezvousId::parse(other).unwrap();
    let head = client_park_head(&id, &Secret::new(SECRET.to_vec()), now_unix(), &nonce());
    let response = relay.exchange(head.as_bytes());
    assert_eq!(status_and_code(&response), (403, "bad_proof".into()));
}

#[test]
fn a_replayed_nonce_is_refused() {
    let relay = Relay::start(&[]);
    let head = park_head(now_unix(), &nonce());
    let mut first = relay.connect();
    first.write_all(head.as_bytes()).unwrap();
    assert_eq!(read_exact_n(&mut first, OK.len()), OK);
    let response = relay.exchange(head.as_bytes());
    assert_eq!(status_and_code(&response), (403, "replayed_nonce".into()));
}

#[test]
fn early_data_from_a_parking_server_is_refused() {
    let relay = Relay::start(&[]);
    let mut request = park_head(now_unix(), &nonce()).into_bytes();
    request.extend_from_slice(b"too soon");
    let response = relay.exchange(&request);
    assert_eq!(status_and_code(&response), (409, "early_data".into()));
}

#[test]
fn malformed_heads_and_targets_get_exact_codes() {
    let relay = Relay::start(&[]);
    let huge = format!(
        "CONNECT uuid:{ID} HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let many: String = (0..65).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("CONNECT uuid:{ID} HTTP/1.1\r\n{many}\r\n");
    let cases: Vec<(Vec<u8>, (u16, &str))> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), (400, "malformed_head")),
        (b"\x00\x01\x02\r\n\r\n".to_vec(), (400, "malformed_head")),
        (huge.into_bytes(), (431, "head_too_large")),
        (many.into_bytes(), (431, "too_many_headers")),
        (
            b"BREW uuid:x HTTP/1.1\r\n\r\n".to_vec(),
            (405, "method_not_allowed"),
        ),
        (
            b"CONNECT example.com:443 HTTP/1.1\r\n\r\n".to_vec(),
            (400, "unknown_target"),
        ),
        (
            b"CONNECT uuid:not-a-uuid HTTP/1.1\r\n\r\n".to_vec(),
            (400, "malformed_uuid"),
        ),
        (
            b"CONNECT uuid:{0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f} HTTP/1.1\r\n\r\n".to_vec(),
            (400, "malformed_uuid"),
        ),
    ];
    for (request, (status, code)) in cases {
        let response = relay.exchange(&request);
        assert_eq!(
            status_and_code(&response),
            (status, code.to_owned()),
            "{}",
            String::from_utf8_lossy(&request[..request.len().min(60)])
        );
        assert!(response.contains("\r\nConnection: close\r\n"));
    }
}

/// A park asking for a pairing notice; returns it once the relay confirmed the notice.
fn park_with_notice(relay: &Relay) -> TcpStream {
    let mut s = relay.connect();
    let head = tryst_client::heads::with_pairing_notice(&park_head(now_unix(), &nonce()));
    s.write_all(head.as_bytes()).unwrap();
    let ok = tryst_engine::reject::OK_RESPONSE_WITH_NOTICE;
    assert_eq!(read_exact_n(&mut s, ok.len()), ok);
    s
}

#[test]
fn a_park_that_asks_is_told_of_its_pairing_before_its_clients_bytes() {
    let notice = tryst_engine::reject::PAIRING_NOTICE;
    assert_eq!(notice, b"TRYST PAIRED\r\n");
    let relay = Relay::start(&["--client-wait", "10s"]);
    // Parked first: a client that sends nothing is announced at once, so a service that
    // speaks first can greet it.
    let mut server = park_with_notice(&relay);
    let mut client = relay.reach(b"");
    assert_eq!(read_exact_n(&mut server, notice.len()), notice);
    server.write_all(b"220 greeting\r\n").unwrap();
    assert_eq!(read_exact_n(&mut client, 14), b"220 greeting\r\n");
    client.write_all(b"HELO").unwrap();
    assert_eq!(read_exact_n(&mut server, 4), b"HELO");
    drop((server, client));
    // The notice comes before bytes the client sent with its head.
    let mut server = park_with_notice(&relay);
    let _client = relay.reach(b"early");
    assert_eq!(
        read_exact_n(&mut server, notice.len() + 5),
        [notice, b"early".as_slice()].concat()
    );
    // A client waiting first: the park's answer, then the notice, then its bytes.
    let mut client = waiting_client(&relay, b"waited");
    let mut server = relay.connect();
    let head = tryst_client::heads::with_pairing_notice(&park_head(now_unix(), &nonce()));
    server.write_all(head.as_bytes()).unwrap();
    let ok = tryst_engine::reject::OK_RESPONSE_WITH_NOTICE;
    assert_eq!(
        read_exact_n(&mut server, ok.len() + notice.len() + 6),
        [ok, notice, b"waited".as_slice()].concat()
    );
    assert_eq!(read_exact_n(&mut client, OK.len()), OK);
    // A park that did not ask gets its client's bytes only.
    let mut plain = relay.park();
    let _client = relay.reach(b"bytes");
    assert_eq!(read_exact_n(&mut plain, 5), b"bytes");
}

#[test]
fn a_malformed_pairing_notice_header_is_refused_with_its_code() {
    let relay = Relay::start(&[]);
    for extra in [
        "Tryst-Pairing-Notice: 0\r\n",
        "Tryst-Pairing-Notice: true\r\n",
        "Tryst-Pairing-Notice: 1\r\nTryst-Pairing-Notice: 1\r\n",
    ] {
        let head = park_head(now_unix(), &nonce());
        let request = format!("{}{extra}\r\n", head.strip_suffix("\r\n").unwrap());
        let response = relay.exchange(request.as_bytes());
        assert_eq!(
            status_and_code(&response),
            (400, "malformed_park_option".into()),
            "{extra:?}: {response}"
        );
    }
}

#[test]
fn upper_case_uuid_reaches_the_same_hidden_server() {
    let relay = Relay::start(&[]);
    let mut server = relay.park();
    let mut client = relay.connect();
    let upper = ID.to_uppercase();
    client
        .write_all(format!("CONNECT uuid:{upper} HTTP/1.1\r\n\r\nX").as_bytes())
        .unwrap();
    assert_eq!(read_exact_n(&mut client, OK.len()), OK);
    assert_eq!(read_exact_n(&mut server, 1), b"X");
}

#[test]
fn slow_head_gets_408_at_the_deadline() {
    let relay = Relay::start(&["--head-timeout", "1s"]);
    let mut s = relay.connect();
    s.write_all(b"CONNECT uuid:").unwrap();
    let started = Instant::now();
    let response = read_to_close(&mut s);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(status_and_code(&response), (408, "head_timeout".into()));
}

#[test]
fn health_and_metrics_are_served_on_the_same_port() {
    let relay = Relay::start(&[]);
    let health = relay.exchange(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = relay.metrics();
    for name in [
        "tryst_parked",
        "tryst_waiting",
        "tryst_paired_total",
        "tryst_active_tunnels",
        "tryst_bytes_spliced_total",
        "tryst_rejections_total",
        "tryst_sockets",
        "tryst_fds",
        "tryst_pipes",
        "tryst_worker_up",
    ] {
        assert!(metrics.contains(name), "missing {name}");
    }
}

#[test]
fn rejections_are_counted_by_reason() {
    let relay = Relay::start(&[]);
    relay.exchange(b"GARBAGE\r\n\r\n");
    relay.exchange(b"GARBAGE\r\n\r\n");
    let metrics = relay.metrics();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("tryst_rejections_total{reason=\"malformed_head\"}")
                && l.ends_with(" 2")
        ),
        "{metrics}"
    );
}

#[test]
fn sigterm_closes_parked_connections_drains_tunnels_and_exits_zero() {
    let mut relay = Relay::start(&["--drain-timeout", "5s"]);
    let mut server = relay.park();
    let mut client = relay.reach(b"");
    let mut parked = relay.park();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(relay.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // The idle parked connection is closed; the tunnel keeps working while it drains.
    let _ = read_to_close(&mut parked);
    client.write_all(b"still here").unwrap();
    assert_eq!(read_exact_n(&mut server, 10), b"still here");
    client.shutdown(Shutdown::Write).unwrap();
    server.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut client), "");
    assert!(relay.wait_exit().success());
}

#[test]
fn sigterm_to_the_whole_process_group_still_drains() {
    use std::os::unix::process::CommandExt;
    let mut relay = Relay::start_with(&["--drain-timeout", "5s"], |mut c| {
        c.process_group(0);
        c
    });
    let mut server = relay.park();
    let mut client = relay.reach(b"");
    // Like Ctrl-C in a terminal or systemd's control-group kill: every process gets it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-(relay.pid() as i32)),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    client.write_all(b"drain me").unwrap();
    assert_eq!(read_exact_n(&mut server, 8), b"drain me");
    client.shutdown(Shutdown::Write).unwrap();
    server.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut client), "");
    assert!(relay.wait_exit().success());
}

/// Waits (bounded) until `relay` runs as many workers as `before` lists, none of them
/// one of `before` (each was replaced after dying); returns their pids.
pub(crate) fn wait_for_replacements(relay: &Relay, before: &[u32]) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = worker_pids(&relay.metrics());
        if pids.len() == before.len() && pids.iter().all(|p| !before.contains(p)) {
            return pids;
        }
        assert!(Instant::now() < deadline, "workers were not restarted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn worker_pids(metrics: &str) -> Vec<u32> {
    metrics
        .lines()
        .filter(|l| l.starts_with("tryst_worker_up{") && l.ends_with(" 1"))
        .filter_map(|l| l.split("pid=\"").nth(1)?.split('"').next()?.parse().ok())
        .collect()
}

/// CPU time (user + system) process `pid` used so far, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

pub(crate) fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn running_out_of_descriptors_backs_off_and_leaves_tunnels_alone() {
    let relay = Relay::start(&["--workers", "1", "--client-wait", "10s"]);
    let mut server = relay.park();
    let mut client = relay.reach(b"");
    let pids = worker_pids(&relay.metrics());
    assert_eq!(pids.len(), 1);
    let worker = pids[0];
    // Lower the running worker's soft descriptor limit to just above what it holds now
    // (the hard limit stays: raising it back needs a capability nobody has here).
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap()
        .1;
    let limit = open_fds(worker) + 4;
    let status = Command::new("prlimit")
        .arg(format!("--pid={worker}"))
        .arg(format!("--nofile={limit}:{hard}"))
        .status()
        .expect("prlimit (util-linux) is needed for this test");
    assert!(status.success());
    // Idle connections (no head) use up what is left until the worker, which re-reads
    // its limit every second, refuses one with 503 and pauses accepting.
    let mut idle = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        assert!(
            Instant::now() < deadline,
            "the worker never refused a connection"
        );
        let mut s = relay.connect();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(n) if n > 0 => break String::from_utf8_lossy(&buf[..n]).into_owned(),
            _ => idle.push(s),
        }
    };
    assert!(
        refusal.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{refusal}"
    );
    // The tunnel made before is untouched.
    client.write_all(b"still flowing").unwrap();
    assert_eq!(read_exact_n(&mut server, 13), b"still flowing");
    server.write_all(b"both ways").unwrap();
    assert_eq!(read_exact_n(&mut client, 9), b"both ways");
    // Give the descriptors back: accepting resumes and new pairings work.
    drop(idle);
    let status = Command::new("prlimit")
        .arg(format!("--pid={worker}"))
        .arg(format!("--nofile={hard}:{hard}"))
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        relay.metric("tryst_accept_backoffs_total") > 0,
        "accept never backed off"
    );
    let mut server2 = relay.park();
    let mut client2 = relay.reach(b"again");
    assert_eq!(read_exact_n(&mut server2, 5), b"again");
    client2.write_all(b"!").unwrap();
    assert_eq!(read_exact_n(&mut server2, 1), b"!");
}

#[test]
fn a_killed_worker_is_restarted_and_serves_again() {
    let relay = Relay::start(&["--workers", "1"]);
    let before = worker_pids(&relay.metrics());
    assert_eq!(before.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The supervisor notices within its poll interval and starts a new worker; the
    // metrics request itself is served by the supervisor and shows the new pid.
    let after = wait_for_replacements(&relay, &before);
    assert_ne!(after, before);
    assert_eq!(relay.metric("tryst_worker_restarts_total"), 1);
    // The new worker refuses proofs stamped in the second it started (it cannot know
    // which ones its predecessor accepted): park with a proof made after it.
    wait_past(now_unix());
    let mut server = relay.park();
    let mut client = relay.reach(b"back");
    assert_eq!(read_exact_n(&mut server, 4), b"back");
    client.write_all(b"!").unwrap();
}

#[test]
fn with_the_pipe_pool_exhausted_tunnels_fall_back_to_copying_byte_exact() {
    // One pipe for the whole worker: concurrent directions must copy through user space.
    let relay = Relay::start(&["--workers", "1", "--max-pipes-per-worker", "1"]);
    both_ways_byte_exact(&relay, 4, 256 * 1024);
    assert!(relay.metric("tryst_pipes") <= 1);
}

/// Opens `tunnels` tunnels and sends `len` distinct bytes each way through each at once;
/// every byte must arrive in order.
fn both_ways_byte_exact(relay: &Relay, tunnels: usize, len: usize) {
    let tunnels: Vec<(TcpStream, TcpStream)> = (0..tunnels)
        .map(|_| {
            let server = relay.park();
            let client = relay.reach(b"");
            (client, server)
        })
        .collect();
    let mut threads = Vec::new();
    for (i, (client, server)) in tunnels.into_iter().enumerate() {
        let up = pattern(len, 10 + i as u8);
        let down = pattern(len, 20 + i as u8);
        let (mut c_w, mut s_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        let (up2, down2) = (up.clone(), down.clone());
        threads.push(std::thread::spawn(move || c_w.write_all(&up2).unwrap()));
        threads.push(std::thread::spawn(move || s_w.write_all(&down2).unwrap()));
        let (mut c_r, mut s_r) = (client, server);
        threads.push(std::thread::spawn(move || {
            assert!(
                read_exact_n(&mut s_r, up.len()) == up,
                "client->server differs"
            );
        }));
        threads.push(std::thread::spawn(move || {
            assert!(
                read_exact_n(&mut c_r, down.len()) == down,
                "server->client differs"
            );
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
}

/// The kernel refuses pipes larger than `fs.pipe-max-size` to a process without
/// `CAP_SYS_RESOURCE`: the pool falls back to the largest size it grants, counts it,
/// and tunnels still splice byte-exact with no refusal of a useful pipe.
#[test]
fn a_pipe_size_the_kernel_refuses_falls_back_to_smaller_pipes_and_is_counted() {
    let max: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let too_large = (2 * max).to_string();
    let relay = Relay::builder()
        .args(["--workers", "1", "--pipe-size", &too_large])
        .wrap(without_pipe_privileges)
        .start();
    both_ways_byte_exact(&relay, 2, 1 << 20);
    // Counted once a second by the worker.
    assert!(
        relay.await_metric_at_least("tryst_pipes_shrunk_total", 1) >= 1,
        "{}",
        relay.metrics()
    );
    assert_eq!(relay.metric("tryst_pipe_refusals_total"), 0);
    assert!(relay.metric("tryst_bytes_spliced_total") >= 4 << 20);
}

/// A stream whose fills fill the pipe (more is waiting than it holds) gets its pipe
/// grown to `--bulk-pipe-size`, counted, and its bytes still arrive byte-exact both
/// ways, the growth happening with bytes in the pipe.
#[test]
fn a_bulk_stream_grows_its_pipe_and_stays_byte_exact() {
    let relay = Relay::start(&[
        "--workers",
        "1",
        "--pipe-size",
        "65536",
        "--bulk-pipe-size",
        "262144",
    ]);
    both_ways_byte_exact(&relay, 2, 8 << 20);
    // Counted once a second by the worker.
    assert!(
        relay.await_metric_at_least("tryst_pipes_grown_total", 1) >= 1,
        "{}",
        relay.metrics()
    );
    assert_eq!(relay.metric("tryst_pipe_refusals_total"), 0);
    assert!(relay.metric("tryst_bytes_spliced_total") >= 32 << 20);
}

/// Runs `cmd` as the kernel's pipe limits apply to an ordinary user: as root, under
/// `setpriv` without `CAP_SYS_RESOURCE` and `CAP_SYS_ADMIN` (which exempt a process
/// from `fs.pipe-max-size` and `fs.pipe-user-pages-soft`); otherwise unchanged.
fn without_pipe_privileges(cmd: Command) -> Command {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to the effective user.
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        return cmd;
    }
    let mut wrapped = Command::new("setpriv");
    wrapped
        .args([
            "--bounding-set",
            "-sys_resource,-sys_admin",
            "--inh-caps",
            "-sys_resource,-sys_admin",
            "--",
        ])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

/// `tryst_fds` is what the worker counts it holds (it no longer lists its descriptor
/// table): parked connections, tunnels and their pipes, and what it started with.
#[test]
fn the_descriptor_gauge_matches_the_worker_table() {
    let relay = Relay::start(&["--workers", "1"]);
    let pids = worker_pids(&relay.metrics());
    assert_eq!(pids.len(), 1);
    let worker = pids[0];
    let mut server = relay.park();
    let mut client = relay.reach(b"");
    let _parked = [relay.park(), relay.park()];
    client.write_all(&pattern(300_000, 1)).unwrap();
    assert_eq!(read_exact_n(&mut server, 300_000), pattern(300_000, 1));
    // Held now: 2 parked + 2 tunnel sockets, and the pipe the bytes went through.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (gauge, table) = (relay.metric("tryst_fds") as usize, open_fds(worker));
        if gauge == table && relay.metric("tryst_pipes") >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tryst_fds {gauge}, /proc/{worker}/fd {table}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop((client, server));
    let deadline = Instant::now() + Duration::from_secs(10);
    while relay.metric("tryst_fds") as usize != open_fds(worker)
        || relay.metric("tryst_active_tunnels") != 0
    {
        assert!(Instant::now() < deadline, "after the tunnel closed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Issue 12 item 2: a native park proof accepted before a restart of the relay is
/// refused after it, with the replay code, within its window.
#[test]
fn a_park_proof_accepted_before_a_relay_restart_is_refused_after_it() {
    let relay = Relay::start(&["--workers", "1"]);
    let head = park_head(now_unix(), &nonce());
    let mut parked = relay.connect();
    parked.write_all(head.as_bytes()).unwrap();
    assert_eq!(read_exact_n(&mut parked, OK.len()), OK);
    let relay = relay.restart(&["--workers", "1"]);
    let refusal = relay.exchange(head.as_bytes());
    assert_eq!(
        status_and_code(&refusal),
        (403, "replayed_nonce".into()),
        "{refusal}"
    );
    // A proof made now is accepted: the refusal is of the old proof, not of the id.
    relay.park();
}

/// Issue 12 item 2: a native park proof accepted by a worker that is then killed (-9)
/// is refused by the worker the engine starts in its place.
#[test]
fn a_park_proof_accepted_before_a_worker_crash_is_refused_after_it() {
    let relay = Relay::start(&["--workers", "1"]);
    let head = park_head(now_unix(), &nonce());
    let mut parked = relay.connect();
    parked.write_all(head.as_bytes()).unwrap();
    assert_eq!(read_exact_n(&mut parked, OK.len()), OK);
    let before = worker_pids(&relay.metrics());
    assert_eq!(before.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = worker_pids(&relay.metrics());
        if pids.len() == 1 && pids != before {
            break;
        }
        assert!(Instant::now() < deadline, "worker was not restarted");
        std::thread::sleep(Duration::from_millis(20));
    }
    let refusal = relay.exchange(head.as_bytes());
    assert_eq!(
        status_and_code(&refusal),
        (403, "replayed_nonce".into()),
        "{refusal}"
    );
    wait_past(now_unix());
    relay.park();
}

/// Issue 12 item 6: `ts` is signed exactly as sent (`ts=0<now>` with the MAC over
/// `0<now>` parks), and a stale `ts` with a wrong MAC is reported as stale.
#[test]
fn the_proof_ts_is_signed_as_sent_and_staleness_is_checked_before_the_mac() {
    use tryst_engine::auth::{Operation, sign_padded};
    let relay = Relay::start(&[]);
    let id = RendezvousId::parse(ID).unwrap();
    let (ts, n) = (now_unix(), nonce());
    let mac = sign_padded(
        &Secret::new(SECRET.to_vec()),
        Operation::Park,
        &id,
        ts,
        1,
        &n,
    );
    let padded = |mac: &[u8]| {
        format!(
            "CONNECT uuid:{ID} HTTP/1.1\r\nProxy-Authorization: Tryst ts=0{ts}, nonce={}, mac={}\r\n\r\n",
            hex::encode(&n),
            b64url(mac)
        )
    };
    let mut s = relay.connect();
    s.write_all(padded(&mac).as_bytes()).unwrap();
    assert_eq!(read_exact_n(&mut s, OK.len()), OK);
    let stale = format!(
        "CONNECT uuid:{ID} HTTP/1.1\r\nProxy-Authorization: Tryst ts={}, nonce={}, mac={}\r\n\r\n",
        ts - 3600,
        hex::encode(nonce()),
        b64url(&[0; 32])
    );
    let refusal = relay.exchange(stale.as_bytes());
    assert_eq!(
        status_and_code(&refusal),
        (403, "stale_timestamp".into()),
        "{refusal}"
    );
    let wrong = format!(
        "CONNECT uuid:{ID} HTTP/1.1\r\nProxy-Authorization: Tryst ts={ts}, nonce={}, mac={}\r\n\r\n",
        hex::encode(nonce()),
        b64url(&[0; 32])
    );
    let refusal = relay.exchange(wrong.as_bytes());
    assert_eq!(
        status_and_code(&refusal),
        (403, "bad_proof".into()),
        "{refusal}"
    );
}

/// Issue 12 item 8: absurd, negative or conflicting `Content-Length`, and
/// `Content-Length` with chunked, are refused by the worker in the owning family's
/// shape (not hyper's empty 400) and counted as `malformed_head`.
#[test]
fn bad_content_length_is_refused_in_the_family_shape_and_counted() {
    let relay = Relay::start(&[]);
    let exact = |body: &str| {
        format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let hivemind = exact(r#"{"reason":"malformed_body","status":"error"}"#);
    let framings = [
        "Content-Length: -1\r\n",
        "Content-Length: 99999999999999999999\r\n",
        "Content-Length: 2\r\nContent-Length: 3\r\n",
        "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
    ];
    for framing in framings {
        let request = format!("POST /deposit HTTP/1.1\r\nHost: t\r\n{framing}\r\n{{}}");
        assert_eq!(relay.exchange(request.as_bytes()), hivemind, "{framing:?}");
    }
    let hive = format!(
        "POST /v1/rendezvous HTTP/1.1\r\nHost: t\r\n{}\r\n{{}}",
        framings[0]
    );
    assert_eq!(
        relay.exchange(hive.as_bytes()),
        exact(r#"{"error":"malformed request framing"}"#)
    );
    let health = format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{}\r\n", framings[2]);
    assert_eq!(
        relay.exchange(health.as_bytes()),
        String::from_utf8(tryst_engine::reject::Rejection::MalformedHead.response()).unwrap()
    );
    let series = "tryst_rejections_total{reason=\"malformed_head\"}";
    assert_eq!(relay.await_value(6, |text| series_value(text, series)), 6);
}

/// `TRYST_TEST_WORKER_EXE` (for profiling workers under valgrind, where the supervisor's
/// `/proc/self/exe` is valgrind itself) starts the workers from the named binary: with
/// the relay's own binary they serve as usual; with a path that does not exist the relay
/// cannot start its workers and exits with an error.
#[test]
fn workers_start_from_a_named_executable_when_asked() {
    let relay = Relay::builder()
        .args(["--workers", "1"])
        .env("TRYST_TEST_WORKER_EXE", env!("CARGO_BIN_EXE_tryst"))
        .start();
    let mut server = relay.park();
    let mut client = relay.reach(b"named");
    assert_eq!(read_exact_n(&mut server, 5), b"named");
    server.write_all(b"!").unwrap();
    assert_eq!(read_exact_n(&mut client, 1), b"!");

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tryst"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("TRYST_CONFIG")
        .env("TRYST_TEST_WORKER_EXE", dir.path().join("no-such-binary"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the relay kept running without its workers");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "{status:?}");
}

/// A worker whose supervisor dies while the worker is still starting must not run on as
/// an orphan, even where orphans go to a subreaper (systemd --user, a container's init)
/// rather than to pid 1. The worker here is a script that says its pid and then waits on
/// a FIFO before it becomes the real worker; a Python subreaper runs the relay and
/// reports every process it reaps. Killing the supervisor must kill the waiting script:
/// it was bound to the supervisor before its exec.
#[test]
fn a_worker_still_starting_dies_with_its_supervisor_under_a_subreaper() {
    use std::io::BufRead as _;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("go");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let script = dir.path().join("worker.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"worker $$\"\nread go < '{}'\nexec '{}' \"$@\"\n",
            fifo.display(),
            env!("CARGO_BIN_EXE_tryst")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    const REAPER: &str = "import ctypes, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
relay = subprocess.Popen(sys.argv[1:])
print('supervisor', relay.pid, flush=True)
while True:
    try:
        pid, status = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    print('reaped', pid, os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0, flush=True)
";
    let mut reaper = Command::new("python3")
        .args(["-c", REAPER, env!("CARGO_BIN_EXE_tryst"), "serve"])
        .args(["--listen", "127.0.0.1:0", "--workers", "1", "--data-dir"])
        .arg(dir.path())
        .env_remove("TRYST_CONFIG")
        .env("TRYST_TEST_WORKER_EXE", &script)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let out = std::io::BufReader::new(reaper.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let next_with = |prefix: &str| -> Option<u32> {
        loop {
            let line = lines.recv_timeout(Duration::from_secs(20)).ok()?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.split(' ').next().and_then(|pid| pid.parse().ok());
            }
        }
    };
    let supervisor = next_with("supervisor ").expect("the reaper started the relay");
    let worker = next_with("worker ").expect("the relay started its worker");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut reaped = Vec::new();
    while reaped.len() < 2 {
        let Ok(line) = lines.recv_timeout(Duration::from_secs(20)) else {
            break;
        };
        if let Some(rest) = line.strip_prefix("reaped ") {
            reaped.push(rest.to_owned());
        }
    }
    if !reaped.contains(&format!("{worker} 9")) {
        // Let the reaper end: the orphan would otherwise wait on its FIFO for ever.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(worker as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = reaper.wait();
    reaped.sort();
    let mut expected = vec![format!("{supervisor} 9"), format!("{worker} 9")];
    expected.sort();
    assert_eq!(
        reaped, expected,
        "the starting worker outlived its supervisor"
    );
}
