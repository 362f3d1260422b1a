//! Several nodes as one (issue #16): three relays on 127.0.0.2-4 sharing one private
//! `redis-server` (started by the test through scripts/redis-test.sh: a unix socket in
//! a temp dir, no persistence), parks on one node reached from the others, and the
//! failures (Redis down and back, a node killed, a node cut off from Redis, a wrong
//! mesh key, a client on the mesh port).

use crate::relay::Relay;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A private redis-server for one test; stopped on drop.
pub(crate) struct TestRedis {
    dir: tempfile::TempDir,
    /// Its unix socket.
    pub(crate) socket: PathBuf,
}

fn redis_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/redis-test.sh")
}

impl TestRedis {
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = Self::run("start", dir.path());
        Self {
            socket: PathBuf::from(socket.trim()),
            dir,
        }
    }

    fn run(cmd: &str, dir: &Path) -> String {
        let out = Command::new(redis_script())
            .arg(cmd)
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-test.sh {cmd}: {}{} (run scripts/test-deps.sh)",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Stops the server (its data is gone: it never persists).
    pub(crate) fn stop(&self) {
        Self::run("stop", self.dir.path());
    }

    /// Starts it again, empty, on the same socket.
    pub(crate) fn start_again(&self) {
        Self::run("start", self.dir.path());
    }

    /// The socket path as a string for `--cluster-redis`.
    pub(crate) fn url(&self) -> String {
        self.socket.to_string_lossy().into_owned()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = Command::new(redis_script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// Writes a mesh key file (mode 0600) into `dir`.
pub(crate) fn write_psk(dir: &Path, key: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("mesh.key");
    std::fs::write(&path, key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Cluster flags for a node called `name` listening on `ip` (public and mesh ports
/// ephemeral).
pub(crate) fn node_args(redis: &TestRedis, psk: &Path, name: &str, ip: &str) -> Vec<String> {
    vec![
        "--listen".into(),
        format!("{ip}:0"),
        "--cluster-redis".into(),
        redis.url(),
        "--node-name".into(),
        name.into(),
        "--mesh-listen".into(),
        format!("{ip}:0"),
        "--mesh-psk-file".into(),
        psk.to_string_lossy().into_owned(),
    ]
}

/// Starts one node with `extra` flags besides its cluster flags.
pub(crate) fn start_node(
    redis: &TestRedis,
    psk: &Path,
    name: &str,
    ip: &str,
    extra: &[&str],
) -> Relay {
    let mut args = node_args(redis, psk, name, ip);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Relay::start(&refs)
}

const PSK: &str = "cluster test mesh key, 0123456789";

/// Reads until the peer closes; what it sent.
fn read_until_closed(s: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn preamble(key: &[u8], node: &str, unix: u64) -> Vec<u8> {
    preamble_for(key, node, unix, "192.0.2.1:4000")
}

/// A preamble naming the client at `client`.
fn preamble_for(key: &[u8], node: &str, unix: u64, client: &str) -> Vec<u8> {
    use tryst_relay::cluster::preamble::{Preamble, encode};
    encode(
        &Preamble {
            node: node.into(),
            transport: tryst_engine::route::Transport::Plain,
            peer: Some(client.parse().unwrap()),
            unix,
            nonce: rand_nonce(),
        },
        key,
    )
}

/// A request carried over the mesh for the client at `client` is served as that
/// client's: the dead-drop's per-address deposit limit counts it under the client's
/// address (from the preamble), not the sending node's.
#[test]
fn the_client_s_address_travels_over_the_mesh() {
    use std::io::Write as _;
    let redis = TestRedis::start();
    let keys = tempfile::tempdir().unwrap();
    let psk = write_psk(keys.path(), PSK);
    let limit = [
        "--workers",
        "1",
        "--deaddrop-rate-limit",
        "1",
        "--deaddrop-rate-window",
        "1h",
    ];
    let a = start_node(&redis, &psk, "a", "127.0.0.2", &limit);
    let mesh = a.mesh_addr.expect("a mesh listening line");
    let deposit = b"POST /deposit HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    let via_mesh = |client: &str| {
        let mut s = std::net::TcpStream::connect(mesh).unwrap();
        s.write_all(&preamble_for(
            PSK.as_bytes(),
            "b",
            crate::tunnel::now_unix(),
            client,
        ))
        .unwrap();
        s.write_all(deposit).unwrap();
        let answer = String::from_utf8(read_until_closed(&mut s)).unwrap();
        answer[9..12].parse::<u16>().unwrap()
    };
    // 400 (an empty deposit), counted against its client's one deposit an hour.
    assert_eq!(via_mesh("198.51.100.7:40000"), 400);
    assert_eq!(via_mesh("198.51.100.7:40001"), 429, "the same client again");
    assert_eq!(via_mesh("198.51.100.8:40000"), 400, "another client");
    assert_eq!(via_mesh("[2001:db8::9]:1"), 400, "and another");
    // The test's own address (what every mesh connection comes from) is still fresh.
    let direct = a.exchange(deposit);
    assert_eq!(&direct[9..12], "400", "{direct}");
}

fn rand_nonce() -> [u8; 16] {
    let n = crate::tunnel::nonce();
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(n.iter().cycle()) {
        *o = *b;
    }
    // nonce() is random text; mix in the clock so two calls never collide.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .to_le_bytes();
    for (o, b) in out.iter_mut().zip(t) {
        *o ^= b;
    }
    out
}

fn refused(node: &Relay, reason: &str) -> u64 {
    let series = format!("tryst_mesh_refused_total{{reason=\"{reason}\"}}");
    crate::tunnel::series_value(&node.metrics(), &series)
}

fn await_refused(node: &Relay, reason: &str, want: u64) -> u64 {
    let series = format!("tryst_mesh_refused_total{{reason=\"{reason}\"}}");
    node.await_value(want, |t| crate::tunnel::series_value(t, &series))
}

/// A wrong mesh key, a replayed preamble and a client's CONNECT on the mesh port are
/// closed without a byte and counted by reason; a good preamble followed by a reach is
/// served by the node's family (here its "not parked": nobody is parked).
#[test]
fn the_mesh_port_refuses_wrong_keys_replays_and_clients() {
    use std::io::Write as _;
    let redis = TestRedis::start();
    let keys = tempfile::tempdir().unwrap();
    let psk = write_psk(keys.path(), PSK);
    let a = start_node(&redis, &psk, "a", "127.0.0.2", &["--workers", "1"]);
    let mesh = a.mesh_addr.expect("a mesh listening line");

    let mut s = std::net::TcpStream::connect(mesh).unwrap();
    s.write_all(&preamble(
        b"another key, not the cluster's",
        "x",
        crate::tunnel::now_unix(),
    ))
    .unwrap();
    s.write_all(tryst_client::heads::reach_head(crate::tunnel::ID).as_bytes())
        .unwrap();
    assert_eq!(read_until_closed(&mut s), b"");
    assert_eq!(await_refused(&a, "bad_key", 1), 1);

    let mut s = std::net::TcpStream::connect(mesh).unwrap();
    s.write_all(tryst_client::heads::reach_head(crate::tunnel::ID).as_bytes())
        .unwrap();
    assert_eq!(read_until_closed(&mut s), b"");
    assert_eq!(await_refused(&a, "not_mesh", 1), 1);

    let good = preamble(PSK.as_bytes(), "b", crate::tunnel::now_unix());
    let mut s = std::net::TcpStream::connect(mesh).unwrap();
    s.write_all(&good).unwrap();
    s.write_all(tryst_client::heads::reach_head(crate::tunnel::ID).as_bytes())
        .unwrap();
    let answer = String::from_utf8(read_until_closed(&mut s)).unwrap();
    assert_eq!(
        crate::tunnel::status_and_code(&answer),
        (404, "not_parked".to_owned()),
        "{answer}"
    );
    let mut s = std::net::TcpStream::connect(mesh).unwrap();
    s.write_all(&good).unwrap();
    assert_eq!(read_until_closed(&mut s), b"");
    assert_eq!(await_refused(&a, "replayed", 1), 1);

    let stale = preamble(PSK.as_bytes(), "b", crate::tunnel::now_unix() - 120);
    let mut s = std::net::TcpStream::connect(mesh).unwrap();
    s.write_all(&stale).unwrap();
    assert_eq!(read_until_closed(&mut s), b"");
    assert_eq!(await_refused(&a, "stale", 1), 1);
    assert_eq!(refused(&a, "bad_key"), 1);
    assert_eq!(
        crate::tunnel::series_value(
            &a.metrics(),
            "tryst_cluster_reaches_total{direction=\"in\"}"
        ),
        1
    );
}

/// A node started with another mesh key (d) carries a client for a key parked on a: a
/// refuses d's preamble and closes, so d counts a failed mesh connection, not a reach,
/// and its client gets native's 404 not_parked after the client wait, never a bare
/// close.
#[test]
fn a_client_on_a_node_with_another_mesh_key_gets_not_parked_not_a_close() {
    let redis = TestRedis::start();
    let keys = tempfile::tempdir().unwrap();
    let good = write_psk(keys.path(), PSK);
    let other_dir = tempfile::tempdir().unwrap();
    let other = write_psk(other_dir.path(), "another mesh key, not the cluster's one");
    let args = ["--workers", "1", "--client-wait", "2s"];
    let a = start_node(&redis, &good, "a", "127.0.0.2", &args);
    let d = start_node(&redis, &other, "d", "127.0.0.5", &args);
    assert_eq!(a.await_metric("tryst_cluster_live_nodes", 1), 1);
    assert_eq!(d.await_metric("tryst_cluster_live_nodes", 1), 1);
    let _parked = park_native(&a);
    await_presence(&redis, crate::tunnel::ID, "a", true);

    let (answer, took) = reach_refused(&d);
    assert_eq!(answer, (404, "not_parked".to_owned()));
    assert!(
        took >= std::time::Duration::from_millis(1900),
        "took {took:?}"
    );
    assert!(took < std::time::Duration::from_secs(8), "took {took:?}");
    assert_eq!(await_refused(&a, "bad_key", 1), 1);
    assert!(d.await_metric_at_least("tryst_mesh_connect_errors_total", 1) >= 1);
    assert_eq!(
        crate::tunnel::series_value(
            &d.metrics(),
            "tryst_cluster_reaches_total{direction=\"out\"}"
        ),
        0
    );
    // The parked connection on a was not used: a local client still reaches it.
    let client = a.reach(b"still parked");
    assert_tunnel(client, _parked, b"still parked");
}

/// A directory that never answered (here: no Redis at the socket given; a wrong
/// password is the same) is warned about once, not only after it answered once.
#[test]
fn a_directory_that_never_answered_is_warned_about_once() {
    let keys = tempfile::tempdir().unwrap();
    let psk = write_psk(keys.path(), PSK);
    let nowhere = keys.path().join("no-redis-here.sock");
    let node = Relay::builder()
        .workers(1)
        .log_file(keys.path().join("relay.log"))
        .args([
            "--listen",
            "127.0.0.2:0",
            "--cluster-redis",
            nowhere.to_str().unwrap(),
            "--node-name",
            "lonely",
            "--mesh-listen",
            "127.0.0.2:0",
            "--mesh-psk-file",
            psk.to_str().unwrap(),
        ])
        .start();
    assert!(node.await_metric_at_least("tryst_cluster_directory_errors_total", 3) >= 3);
    let warning = "cluster directory unreachable";
    assert!(node.await_log(warning), "{}", node.log());
    let log = node.log();
    assert_eq!(log.matches(warning).count(), 1, "{log}");
    assert!(
        log.contains("no-redis-here.sock") || log.contains("No such file"),
        "{log}"
    );
}

/// Three nodes (a, b, c on 127.0.0.2-4, one worker each) on one private Redis, each
/// seeing the other two live before the test goes on.
pub(crate) struct Three {
    // Fields drop in order: the nodes before the Redis they use.
    pub(crate) nodes: Vec<Relay>,
    pub(crate) keys: tempfile::TempDir,
    pub(crate) redis: TestRedis,
}

pub(crate) const NAMES: [&str; 3] = ["a", "b", "c"];
pub(crate) const IPS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];

impl Three {
    pub(crate) fn start(extra: &[&str]) -> Self {
        let redis = TestRedis::start();
        let keys = tempfile::tempdir().unwrap();
        let psk = write_psk(keys.path(), PSK);
        let mut args = vec!["--workers", "1", "--client-wait", "3s"];
        args.extend_from_slice(extra);
        let nodes: Vec<Relay> = NAMES
            .iter()
            .zip(IPS)
            .map(|(name, ip)| start_node(&redis, &psk, name, ip, &args))
            .collect();
        for n in &nodes {
            assert_eq!(n.await_metric("tryst_cluster_live_nodes", 2), 2);
        }
        Self { nodes, keys, redis }
    }
}

/// A native park on `at` waiting for its client; the parked connection.
fn park_native(at: &Relay) -> std::net::TcpStream {
    at.park()
}

/// Waits (bounded) until the directory says whether `node` holds the `uuid:` id `id`.
fn await_presence(redis: &TestRedis, id: &str, node: &str, want: bool) {
    let key = format!("tryst:park:00{}", hex_id(id));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(&redis.socket)
            .args(["HEXISTS", &key, node])
            .output()
            .unwrap();
        let has = String::from_utf8_lossy(&out.stdout).trim() == "1";
        if has == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "presence of {node} never became {want}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn hex_id(id: &str) -> String {
    id.replace('-', "")
}

/// Bytes both ways through a paired tunnel (client side `c`, server side `s`), with
/// `early` sent by the client after its head.
fn assert_tunnel(mut c: std::net::TcpStream, mut s: std::net::TcpStream, early: &[u8]) {
    use std::io::{Read as _, Write as _};
    let mut got = vec![0u8; early.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, early);
    s.write_all(b"from the hidden server").unwrap();
    let mut got = [0u8; 22];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"from the hidden server");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    c.write_all(&big).unwrap();
    let mut got = vec![0u8; big.len()];
    s.read_exact(&mut got).unwrap();
    assert!(got == big, "200 kB client -> server differ");
    s.write_all(&big).unwrap();
    let mut got = vec![0u8; big.len()];
    c.read_exact(&mut got).unwrap();
    assert!(got == big, "200 kB server -> client differ");
}

/// A hidden server parked on a is reached from b and from c (native ids): the 200,
/// the early bytes and 200 kB each way pass through the mesh unchanged.
#[test]
fn native_park_on_a_is_reached_from_b_and_c() {
    let three = Three::start(&[]);
    let [a, b, c] = &three.nodes[..] else {
        unreachable!()
    };
    for (i, from) in [b, c].into_iter().enumerate() {
        let server = park_native(a);
        await_presence(&three.redis, crate::tunnel::ID, "a", true);
        let early = format!("early bytes {i}");
        let client = from.reach(early.as_bytes());
        assert_tunnel(client, server, early.as_bytes());
    }
    assert_eq!(
        crate::tunnel::series_value(
            &b.metrics(),
            "tryst_cluster_reaches_total{direction=\"out\"}"
        ),
        1
    );
    // The reach cost b one directory round trip (its lookup of the key).
    assert_eq!(
        crate::tunnel::series_value(
            &b.metrics(),
            "tryst_cluster_directory_round_trips_total{what=\"lookup\"}"
        ),
        1
    );
    // The tunnel's bytes both ways are mesh bytes on both nodes: b wrote the client's
    // 200 kB (and its early bytes) to the mesh and read the server's 200 kB (and its
    // greeting) from it; a, which carried two tunnels, the same in reverse.
    let at_least = |node: &Relay, direction: &str, want: u64| {
        let series = format!("tryst_mesh_bytes_total{{direction=\"{direction}\"}}");
        let got = node.await_value(1, |t| {
            u64::from(crate::tunnel::series_value(t, &series) >= want)
        });
        assert_eq!(got, 1, "{series} < {want}: {}", node.metrics());
    };
    at_least(b, "out", 200_000);
    at_least(b, "in", 200_022);
    at_least(a, "in", 400_000);
    at_least(a, "out", 400_044);
    let healthz_b = healthz(b);
    assert!(healthz_b["cluster"]["mesh_bytes"]["in"].as_u64().unwrap() >= 200_022);
    assert_eq!(
        crate::tunnel::series_value(
            &a.metrics(),
            "tryst_cluster_reaches_total{direction=\"in\"}"
        ),
        2
    );
    drop(three.keys);
}

/// node-rendezvous over TLS: a steward-style hidden server parked on a's TLS listener
/// is reached by a mobile client on b's TLS listener (b carries its head to a marked
/// TLS, so a answers in its TLS style), and then on c's.
#[test]
fn node_rendezvous_tls_park_on_a_is_reached_from_b_and_c() {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let secrets = crate::node::cluster_secrets(dir.path());
    let three = Three::start(&[
        "--secrets",
        secrets.to_str().unwrap(),
        // One wildcard listener per node (its own port), certificates named for the
        // address the test dials.
        "--tls-listen",
        "0.0.0.0:0",
        "--tls-name",
        "127.0.0.1",
    ]);
    let [a, b, c] = &three.nodes[..] else {
        unreachable!()
    };
    for (i, from) in [b, c].into_iter().enumerate() {
        let mut server = crate::node::park_over_tls(a);
        await_presence(&three.redis, crate::node::PARKED_ID, "a", true);
        let mut client = crate::tls::tls_connect(from);
        let path = format!("/hello/{i}");
        client
            .write_all(crate::node::mobile_request(&path).as_bytes())
            .unwrap();
        let head = crate::node::read_forwarded_head_tls(&mut server);
        assert!(
            head.starts_with(&format!("GET {path} HTTP/1.1\r\n")),
            "{head}"
        );
        assert!(
            !head.to_ascii_lowercase().contains("authorization"),
            "{head}"
        );
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nfrom a!";
        server.write_all(answer).unwrap();
        server.flush().unwrap();
        let mut got = vec![0u8; answer.len()];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, answer);
        client.write_all(b"more from the client").unwrap();
        client.flush().unwrap();
        let mut got = [0u8; 20];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"more from the client");
    }
}

/// A long-term tag published on a is answered from b and from c: the responder gets
/// its 200 from a's tag family and the publisher the hello frame with the responder's
/// challenge, then bytes both ways.
#[test]
fn tag_published_on_a_is_answered_from_b_and_c() {
    let three = Three::start(&[]);
    let [a, b, c] = &three.nodes[..] else {
        unreachable!()
    };
    for (i, from) in [b, c].into_iter().enumerate() {
        let name = format!("cluster billboard {i}");
        // The responder may arrive before the presence is written: it waits.
        let (publisher, responder) = crate::tag::publish_and_respond_across(a, from, &name);
        assert_tunnel(responder, publisher, b"");
    }
    // A tag published nowhere is still refused with the exact unknown-tag answer, after
    // the client wait.
    let (request, want) = crate::tag::unknown_tag_request();
    assert_eq!(b.exchange(request.as_bytes()), want);
}

/// Hive streaming fallback: a device parked on a is reached from b and from c.
#[test]
fn hive_stream_park_on_a_is_reached_from_b_and_c() {
    let three = Three::start(&[]);
    let [a, b, c] = &three.nodes[..] else {
        unreachable!()
    };
    for (n, from) in [(1u8, b), (2u8, c)] {
        let (server, client) = crate::hive_stream::park_and_reach_across(a, from, n);
        assert_tunnel(client, server, b"");
    }
}

/// The status and code of a native reach of `ID` sent to `node`, and how long the answer
/// took.
fn reach_refused(node: &Relay) -> ((u16, String), std::time::Duration) {
    let t = std::time::Instant::now();
    let answer = node.exchange(tryst_client::heads::reach_head(crate::tunnel::ID).as_bytes());
    (crate::tunnel::status_and_code(&answer), t.elapsed())
}

/// Redis down: local parks and pairings go on; a cross-node reach gets native's clean
/// 404 not_parked after the client wait (3 s here), not a hang. Redis back (empty): the
/// nodes re-write their liveness and parks, and cross-node reaches work again.
#[test]
fn redis_down_keeps_local_pairings_and_refuses_cross_reaches_cleanly_then_heals() {
    let three = Three::start(&[]);
    let [a, b, _c] = &three.nodes[..] else {
        unreachable!()
    };
    three.redis.stop();
    for n in &three.nodes {
        assert_eq!(n.await_metric("tryst_cluster_directory_connected", 0), 0);
    }
    // Local: park and reach on a.
    let server = park_native(a);
    let client = a.reach(b"local while redis is down");
    assert_tunnel(client, server, b"local while redis is down");
    // Cross: parked on a, reached from b.
    let _parked = park_native(a);
    let (answer, took) = reach_refused(b);
    assert_eq!(answer, (404, "not_parked".to_owned()));
    assert!(took < std::time::Duration::from_secs(8), "took {took:?}");
    let unfound = "tryst_cluster_lookups_total{outcome=\"unfound\"}";
    assert_eq!(
        b.await_value(1, |t| crate::tunnel::series_value(t, unfound)),
        1
    );

    three.redis.start_again();
    for n in &three.nodes {
        assert_eq!(n.await_metric("tryst_cluster_directory_connected", 1), 1);
        assert_eq!(n.await_metric("tryst_cluster_live_nodes", 2), 2);
    }
    // a's park (still parked) is written again without any new park.
    await_presence(&three.redis, crate::tunnel::ID, "a", true);
    let client = b.reach(b"after the comeback");
    assert_tunnel(client, _parked, b"after the comeback");
}

/// kill -9 of a node: reaches for its keys from the others get a clean not_parked
/// within 10 s; the hidden server parking again on c is reachable from b and c.
#[test]
fn a_killed_node_stops_being_a_target_and_reparked_servers_are_reachable() {
    let mut three = Three::start(&[]);
    let server = park_native(&three.nodes[0]);
    await_presence(&three.redis, crate::tunnel::ID, "a", true);
    let mut a = three.nodes.remove(0);
    let status = Command::new("kill")
        .args(["-9", &a.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Reaped: its sockets (mesh listener, accepted warm sockets) are closed. A warm
    // socket taken in the very instant a node dies still carries a client to it, who
    // then sees the connection close (as a client of that node would): docs/cluster.md.
    a.wait_exit();
    drop(server);
    let [b, c] = &three.nodes[..] else {
        unreachable!()
    };
    let (answer, took) = reach_refused(b);
    assert_eq!(answer, (404, "not_parked".to_owned()));
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
    drop(a);
    // The hidden server parks again, on c: reachable from b and from c.
    for from in [b, c] {
        let server = park_native(c);
        await_presence(&three.redis, crate::tunnel::ID, "c", true);
        let client = from.reach(b"re-parked");
        assert_tunnel(client, server, b"re-parked");
    }
    assert_eq!(b.await_metric("tryst_cluster_live_nodes", 1), 1);
}

/// A unix-socket proxy to Redis that the test can cut (every connection closed, new
/// ones refused) and restore.
struct CutProxy {
    path: PathBuf,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::os::unix::net::UnixStream>>>,
    _dir: tempfile::TempDir,
}

impl CutProxy {
    fn start(upstream: &Path) -> Self {
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (cut2, conns2, upstream) = (cut.clone(), conns.clone(), upstream.to_owned());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(down) = conn else { return };
                if cut2.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(up) = UnixStream::connect(&upstream) else {
                    continue;
                };
                let mut list = conns2.lock().unwrap();
                list.push(down.try_clone().unwrap());
                list.push(up.try_clone().unwrap());
                for (mut from, mut to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self {
            path,
            cut,
            conns,
            _dir: dir,
        }
    }

    fn cut(&self, on: bool) {
        self.cut.store(on, std::sync::atomic::Ordering::SeqCst);
        if on {
            for c in self.conns.lock().unwrap().drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// A node cut off from Redis stops being a forwarding target (its liveness record
/// expires): a client on b for a key parked on a gets not_parked. Restored, a re-writes
/// its state and is reached again.
#[test]
fn a_node_cut_off_from_redis_stops_being_a_target_until_it_rejoins() {
    let redis = TestRedis::start();
    let keys = tempfile::tempdir().unwrap();
    let psk = write_psk(keys.path(), PSK);
    let proxy = CutProxy::start(&redis.socket);
    let flags = ["--workers", "1", "--client-wait", "3s"];
    let mut a_args = node_args(&redis, &psk, "a", IPS[0]);
    a_args[3] = proxy.path.to_string_lossy().into_owned();
    a_args.extend(flags.iter().map(|f| (*f).to_owned()));
    let a_refs: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let a = Relay::start(&a_refs);
    let b = start_node(&redis, &psk, "b", IPS[1], &flags);
    assert_eq!(a.await_metric("tryst_cluster_live_nodes", 1), 1);
    assert_eq!(b.await_metric("tryst_cluster_live_nodes", 1), 1);
    let server = park_native(&a);
    await_presence(&redis, crate::tunnel::ID, "a", true);

    proxy.cut(true);
    assert_eq!(a.await_metric("tryst_cluster_directory_connected", 0), 0);
    // b forgets a once its record expires (5 s TTL).
    assert_eq!(
        b.await_metric("tryst_cluster_live_nodes", 0),
        0,
        "b still sees a"
    );
    let (answer, _) = reach_refused(&b);
    assert_eq!(answer, (404, "not_parked".to_owned()));

    proxy.cut(false);
    assert_eq!(a.await_metric("tryst_cluster_directory_connected", 1), 1);
    assert_eq!(
        b.await_metric("tryst_cluster_live_nodes", 1),
        1,
        "b never saw a again"
    );
    await_presence(&redis, crate::tunnel::ID, "a", true);
    let client = b.reach(b"rejoined");
    assert_tunnel(client, server, b"rejoined");
}

/// Whether `node` is live (its liveness record exists) and whether it has a field in the
/// park record `key`, read in one script: Redis runs it atomically.
fn live_and_advertised(redis: &TestRedis, node: &str, key: &str) -> (bool, bool) {
    let out = Command::new("redis-cli")
        .arg("-s")
        .arg(&redis.socket)
        .args([
            "EVAL",
            "return {redis.call('EXISTS', KEYS[1]), redis.call('HEXISTS', KEYS[2], ARGV[1])}",
            "2",
            &format!("tryst:node:{node}"),
            key,
            node,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let flags: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(flags.len(), 2, "EVAL answered {text:?}");
    (flags[0] == "1", flags[1] == "1")
}

/// A park that ended on a while a was cut off from Redis is not trusted after a
/// rejoins. a could not delete its field then; once its liveness record is back (same
/// epoch, the field still within its 30 s) readers would carry clients to a, which no
/// longer holds the key. So a deletes what it owes the directory before it writes its
/// liveness record again: no reading of Redis shows a live with that field, and a
/// client on b reaches the hidden server that parked again on c meanwhile.
#[test]
fn a_park_that_ended_while_cut_off_is_not_trusted_after_the_node_rejoins() {
    let redis = TestRedis::start();
    let keys = tempfile::tempdir().unwrap();
    let psk = write_psk(keys.path(), PSK);
    let proxy = CutProxy::start(&redis.socket);
    let flags = ["--workers", "1", "--client-wait", "3s"];
    let mut a_args = node_args(&redis, &psk, "a", IPS[0]);
    a_args[3] = proxy.path.to_string_lossy().into_owned();
    a_args.extend(flags.iter().map(|f| (*f).to_owned()));
    let a_refs: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let a = Relay::start(&a_refs);
    let b = start_node(&redis, &psk, "b", IPS[1], &flags);
    let c = start_node(&redis, &psk, "c", IPS[2], &flags);
    for n in [&a, &b, &c] {
        assert_eq!(n.await_metric("tryst_cluster_live_nodes", 2), 2);
    }
    let server = park_native(&a);
    await_presence(&redis, crate::tunnel::ID, "a", true);

    proxy.cut(true);
    assert_eq!(a.await_metric("tryst_cluster_directory_connected", 0), 0);
    // The park ends while a is cut off: a client of a's own takes it.
    let client = a.reach(b"while cut off");
    assert_tunnel(client, server, b"while cut off");
    // b and c forget a (its record expires: 5 s); a's field, which a could not delete,
    // is still in the directory.
    for n in [&b, &c] {
        assert_eq!(n.await_metric("tryst_cluster_live_nodes", 1), 1);
    }
    let record = format!("tryst:park:00{}", hex_id(crate::tunnel::ID));
    assert_eq!(live_and_advertised(&redis, "a", &record), (false, true));
    // The hidden server parks again, on c.
    let server = park_native(&c);
    await_presence(&redis, crate::tunnel::ID, "c", true);

    proxy.cut(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut readings = 0u32;
    loop {
        let (live, advertised) = live_and_advertised(&redis, "a", &record);
        readings += 1;
        assert!(
            !(live && advertised),
            "a is live again while its ended park is still advertised (reading {readings})"
        );
        if live {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a never rejoined");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(a.await_metric("tryst_cluster_directory_connected", 1), 1);
    assert_eq!(b.await_metric("tryst_cluster_live_nodes", 2), 2);
    let client = b.reach(b"after the rejoin");
    assert_tunnel(client, server, b"after the rejoin");
    assert_eq!(
        crate::tunnel::series_value(
            &a.metrics(),
            "tryst_cluster_reaches_total{direction=\"in\"}"
        ),
        0
    );
}

/// `--check-config` with the cluster flags: a missing mesh key file, a too short key and
/// a wildcard mesh address without `--mesh-advertise` are refused naming the problem
/// (never the Redis password); a good set prints the cluster line.
#[test]
fn check_config_checks_the_mesh_key_and_address() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tryst"))
            .args(["serve", "--check-config", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--cluster-redis", "redis://:hunter2@127.0.0.1:6390/0"])
            .args(extra)
            .env_remove("TRYST_CONFIG")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains("hunter2"), "{text}");
        (out.status.code(), text)
    };
    let missing = dir.path().join("missing.key");
    let (code, text) = run(&[
        "--mesh-psk-file",
        missing.to_str().unwrap(),
        "--mesh-listen",
        "127.0.0.2:7401",
    ]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot read mesh key file"), "{text}");
    let short = write_psk(dir.path(), "short");
    let (code, text) = run(&[
        "--mesh-psk-file",
        short.to_str().unwrap(),
        "--mesh-listen",
        "127.0.0.2:7401",
    ]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("fewer than 16 bytes"), "{text}");
    let good = write_psk(dir.path(), PSK);
    let (code, text) = run(&["--mesh-psk-file", good.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("pass --mesh-advertise"), "{text}");
    let (code, text) = run(&[
        "--mesh-psk-file",
        good.to_str().unwrap(),
        "--mesh-listen",
        "0.0.0.0:7401",
        "--mesh-advertise",
        "10.0.0.1:7401",
        "--node-name",
        "n1",
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("cluster node    n1 directory 127.0.0.1:6390 mesh 0.0.0.0:7401"),
        "{text}"
    );
}

/// With several workers per node the mesh connection may land on a worker that does not
/// own the key (it is handed to the owner, still mesh-origin) and lookups come from
/// whichever worker owns the client's key (the mesh socket goes back to that one):
/// several parks and reaches across two nodes of four workers each all pair.
#[test]
fn reaches_cross_nodes_of_several_workers() {
    let redis = TestRedis::start();
    let keys = tempfile::tempdir().unwrap();
    let psk = write_psk(keys.path(), PSK);
    let flags = ["--workers", "4", "--client-wait", "3s"];
    let a = start_node(&redis, &psk, "a", IPS[0], &flags);
    let b = start_node(&redis, &psk, "b", IPS[1], &flags);
    assert_eq!(a.await_metric("tryst_cluster_live_nodes", 1), 1);
    assert_eq!(b.await_metric("tryst_cluster_live_nodes", 1), 1);
    for i in 0..6u8 {
        let (park_on, reach_from) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (server, client) =
            crate::hive_stream::park_and_reach_across(park_on, reach_from, 10 + i);
        assert_tunnel(client, server, b"");
    }
    assert_eq!(
        crate::tunnel::series_value(
            &a.metrics(),
            "tryst_cluster_reaches_total{direction=\"in\"}"
        ) + crate::tunnel::series_value(
            &b.metrics(),
            "tryst_cluster_reaches_total{direction=\"in\"}"
        ),
        6
    );
}

/// A node killed and started again under the same name has a new epoch: the park
/// record its previous run left in Redis (still there, within its TTL) is ignored, so a
/// reach from b gets not_parked instead of being carried to a node that no longer holds
/// the key; a park in the new run is reached.
#[test]
fn a_restarted_node_s_stale_parks_are_ignored_by_epoch() {
    let redis = TestRedis::start();
    let keys = tempfile::tempdir().unwrap();
    let psk = write_psk(keys.path(), PSK);
    let flags = ["--workers", "1", "--client-wait", "2s"];
    let a = start_node(&redis, &psk, "a", IPS[0], &flags);
    let b = start_node(&redis, &psk, "b", IPS[1], &flags);
    assert_eq!(b.await_metric("tryst_cluster_live_nodes", 1), 1);
    let server = park_native(&a);
    await_presence(&redis, crate::tunnel::ID, "a", true);
    let mut a = a;
    let status = Command::new("kill")
        .args(["-9", &a.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    a.wait_exit();
    drop(server);
    drop(a);
    let a = start_node(&redis, &psk, "a", IPS[0], &flags);
    assert_eq!(a.await_metric("tryst_cluster_live_nodes", 1), 1);
    // b has read a's new epoch.
    let epoch = healthz(&a)["cluster"]["epoch"].as_u64().unwrap();
    // (await_value polls /metrics; the answer here is read from /healthz.)
    let seen = |_metrics: &str| -> u64 {
        let h = healthz(&b);
        let nodes = h["cluster"]["directory"]["live_nodes"].as_array().cloned();
        u64::from(nodes.is_some_and(|n| {
            n.iter()
                .any(|n| n["name"] == "a" && n["epoch"].as_u64() == Some(epoch))
        }))
    };
    assert_eq!(b.await_value(1, seen), 1, "b never saw a's new epoch");
    // The old run's field is still there; the new run holds nothing.
    await_presence(&redis, crate::tunnel::ID, "a", true);
    let (answer, _) = reach_refused(&b);
    assert_eq!(answer, (404, "not_parked".to_owned()));
    assert_eq!(
        crate::tunnel::series_value(
            &a.metrics(),
            "tryst_cluster_reaches_total{direction=\"in\"}"
        ),
        0
    );
    let server = park_native(&a);
    let client = b.reach(b"new epoch");
    assert_tunnel(client, server, b"new epoch");
}

/// A node's `/healthz` JSON.
fn healthz(node: &Relay) -> serde_json::Value {
    let answer = node.exchange(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}
