//! Data-path comparison: bulk throughput through `tryst serve` in each data-path mode
//! (and with both ends over TLS, terminated by the relay in user space)
//! against a direct loopback connection, at several pair counts, interleaved A/B/C in
//! one invocation, with relay CPU seconds per GB read from /proc. With `haproxy` on the
//! PATH, `haproxy-tls` is the TLS row's counterpart: HAProxy (one thread) terminating
//! the client's TLS and re-encrypting to a TLS sink, so both relays decrypt and encrypt
//! every byte once (TLS 1.3 everywhere, the same rustls sessions at both ends).
//!
//! `datapath [--pairs 1,16,256] [--reps 3] [--mib 1024] [--tryst PATH] [--modes LIST]`
//!
//! Each run moves `--mib` MiB in total, split evenly over the pairs, client to server,
//! through blocking sockets on threads. The relay runs with one worker so its CPU is one
//! process; where `taskset` exists the relay is pinned to CPU 1 and the load to CPU 0.

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tryst_engine::auth::{Operation, Secret, proof_header};
use tryst_engine::target::RendezvousId;

const ID: &str = "6c0d1f7a-2b3c-4d5e-8f90-a1b2c3d4e5f6";
const SECRET: [u8; 32] = [42; 32];
const CHUNK: usize = 256 * 1024;

struct Args {
    pairs: Vec<usize>,
    reps: usize,
    mib: usize,
    tryst: std::path::PathBuf,
    modes: Vec<String>,
}

/// Every mode, in report order (`direct` first: the ratios are against it).
const MODES: [&str; 5] = [
    "direct",
    "splice-syscall",
    "splice-uring",
    "tls",
    "haproxy-tls",
];

fn parse_args() -> Args {
    let mut args = Args {
        pairs: vec![1, 16, 256],
        reps: 3,
        mib: 1024,
        tryst: std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("tryst")))
            .unwrap_or_else(|| "tryst".into()),
        modes: MODES
            .iter()
            .filter(|m| **m != "haproxy-tls" || on_path("haproxy"))
            .map(|m| (*m).to_owned())
            .collect(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--pairs" => args.pairs = value.split(',').filter_map(|v| v.parse().ok()).collect(),
            "--reps" => args.reps = value.parse().unwrap_or(3),
            "--mib" => args.mib = value.parse().unwrap_or(1024),
            "--tryst" => args.tryst = value.into(),
            "--modes" => {
                args.modes = value.split(',').map(str::to_owned).collect();
                if args.modes.first().map(String::as_str) != Some("direct")
                    || !args.modes.iter().all(|m| MODES.contains(&m.as_str()))
                {
                    eprintln!("--modes: `direct` first, then any of {MODES:?}");
                    std::process::exit(2);
                }
            }
            _ => {
                eprintln!(
                    "usage: datapath [--pairs 1,16,256] [--reps 3] [--mib 1024] [--tryst PATH] [--modes direct,...]"
                );
                std::process::exit(2);
            }
        }
    }
    args
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn taskset() -> bool {
    Command::new("taskset").arg("-V").output().is_ok()
}

struct RelayProc {
    child: Child,
    addr: SocketAddr,
    /// The TLS listener (mode `tls` only).
    tls_addr: Option<SocketAddr>,
    dir: tempfile::TempDir,
}

/// A byte stream one transfer thread owns: plain TCP or a rustls client session.
trait Stream: Read + Write + Send {
    /// Ends the sending direction (FIN, or close_notify for TLS).
    fn finish(&mut self);
}

impl Stream for TcpStream {
    fn finish(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

impl Stream for TlsStream {
    fn finish(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush();
    }
}

type TlsServerStream = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

impl Stream for TlsServerStream {
    fn finish(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush();
    }
}

/// HAProxy terminating TLS (one thread, TLS 1.3) and re-encrypting to a TLS sink on
/// `sink`, with a certificate of its own; the process and the client's trust.
struct HaproxyTls {
    child: Child,
    addr: SocketAddr,
    sink: TcpListener,
    client: std::sync::Arc<rustls::ClientConfig>,
    server: std::sync::Arc<rustls::ServerConfig>,
    _dir: tempfile::TempDir,
}

impl Drop for HaproxyTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_haproxy_tls(pin: bool) -> HaproxyTls {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.key_pair.serialize_pem());
    let pem = dir.path().join("haproxy.pem");
    std::fs::write(&pem, format!("{cert_pem}{key_pem}")).expect("write pem");
    let sink = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let port = TcpListener::bind("127.0.0.1:0").expect("bind probe");
    let addr = port.local_addr().expect("addr");
    drop(port);
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n    nbthread 1\n    maxconn 4000\n    ssl-default-bind-options ssl-min-ver TLSv1.3\n    ssl-default-server-options ssl-min-ver TLSv1.3\n\n\
             defaults\n    mode tcp\n    timeout connect 10s\n    timeout client 1h\n    timeout server 1h\n\n\
             listen tls\n    bind {addr} ssl crt {}\n    server sink {} ssl verify none\n",
            pem.display(),
            sink.local_addr().expect("sink addr")
        ),
    )
    .expect("write haproxy.cfg");
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "1", "haproxy"]);
        c
    } else {
        Command::new("haproxy")
    };
    let child = cmd
        .args(["-db", "-f"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .spawn()
        .expect("start haproxy");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "haproxy did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .expect("server config");
    HaproxyTls {
        child,
        addr,
        sink,
        client: std::sync::Arc::new(client),
        server: std::sync::Arc::new(server),
        _dir: dir,
    }
}

/// Opens `n` tunnels through HAProxy: (client, sink) pairs, TLS on both legs.
fn haproxy_tls_pairs(h: &HaproxyTls, n: usize) -> Vec<Pair> {
    (0..n)
        .map(|_| {
            let mut tcp = TcpStream::connect(h.addr).expect("connect");
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
            let mut conn = rustls::ClientConnection::new(h.client.clone(), name).expect("session");
            // HAProxy connects to its server once the client's handshake is done.
            while conn.is_handshaking() {
                conn.complete_io(&mut tcp).expect("client handshake");
            }
            let (sink, _) = h.sink.accept().expect("accept");
            let server = rustls::ServerConnection::new(h.server.clone()).expect("session");
            (
                Box::new(TlsStream::new(conn, tcp)) as Box<dyn Stream>,
                Box::new(TlsServerStream::new(server, sink)) as Box<dyn Stream>,
            )
        })
        .collect()
}

type Pair = (Box<dyn Stream>, Box<dyn Stream>);

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(tryst: &std::path::Path, mode: &str, pin: bool) -> RelayProc {
    use base64::Engine as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
    std::fs::write(
        dir.path().join("secrets.toml"),
        format!("[secrets]\n\"{ID}\" = \"{secret}\"\n"),
    )
    .expect("write secrets");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("secrets.toml"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod secrets");
    }
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "1"]).arg(tryst);
        c
    } else {
        Command::new(tryst)
    };
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--data-path",
        if mode == "tls" {
            "splice-syscall"
        } else {
            mode
        },
    ])
    .arg("--data-dir")
    .arg(dir.path())
    .env("TRYST_LOG", "warn")
    .stdout(Stdio::piped());
    if mode == "tls" {
        cmd.args(["--tls-listen", "127.0.0.1:0"]);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", tryst.display()));
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = (0..if mode == "tls" { 4 } else { 2 }).map(|_| {
        let mut line = String::new();
        out.read_line(&mut line).expect("startup line");
        line
    });
    let line = lines.next().unwrap_or_default();
    let tls_addr = lines.nth(1).and_then(|l| {
        l.trim()
            .strip_prefix("tryst: tls listening on ")
            .and_then(|a| a.parse().ok())
    });
    let addr = line
        .trim()
        .strip_prefix("tryst: listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    RelayProc {
        child,
        addr,
        tls_addr,
        dir,
    }
}

/// utime + stime of a process and all its descendants (workers; io-wq threads are
/// threads of the worker and are included in its counts), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let tick = 100.0;
    let mut total = 0.0;
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            let rest = stat.rsplit(')').next().unwrap_or("");
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            total += (ut + st) / tick;
        }
        if let Ok(kids) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
            stack.extend(
                kids.split_whitespace()
                    .filter_map(|k| k.parse::<u32>().ok()),
            );
        }
    }
    total
}

fn read_ok(s: &mut dyn Stream) {
    let mut buf = [0u8; 16];
    s.read_exact(&mut buf).expect("read 200");
    assert_eq!(&buf, b"HTTP/1.1 200\r\n\r\n", "relay refused");
}

fn tls_client_config(relay: &RelayProc) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(relay.dir.path().join("tls-cert.pem")).expect("certificate");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("pem")).expect("root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn open(relay: &RelayProc, tls: Option<&std::sync::Arc<rustls::ClientConfig>>) -> Box<dyn Stream> {
    match tls {
        None => Box::new(TcpStream::connect(relay.addr).expect("connect")),
        Some(config) => {
            let tcp = TcpStream::connect(relay.tls_addr.expect("tls address")).expect("connect");
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
            let conn = rustls::ClientConnection::new(config.clone(), name).expect("session");
            Box::new(TlsStream::new(conn, tcp))
        }
    }
}

/// Opens `n` tunnels through the relay: (client, server) pairs, both sides over TLS
/// when `tls`.
fn relay_pairs(relay: &RelayProc, n: usize, tls: bool) -> Vec<Pair> {
    let id = RendezvousId::parse(ID).expect("id");
    let secret = Secret::new(SECRET.to_vec());
    let config = tls.then(|| tls_client_config(relay));
    (0..n)
        .map(|i| {
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let mut nonce = (i as u64).to_be_bytes().to_vec();
            nonce.extend_from_slice(&rand_bytes());
            let mut server = open(relay, config.as_ref());
            let value = proof_header(&secret, Operation::Park, &id, ts, &nonce);
            server
                .write_all(
                    format!("CONNECT uuid:{ID} HTTP/1.1\r\nProxy-Authorization: {value}\r\n\r\n")
                        .as_bytes(),
                )
                .expect("park");
            read_ok(server.as_mut());
            let mut client = open(relay, config.as_ref());
            client
                .write_all(format!("CONNECT uuid:{ID} HTTP/1.1\r\n\r\n").as_bytes())
                .expect("reach");
            read_ok(client.as_mut());
            (client, server)
        })
        .collect()
}

fn rand_bytes() -> [u8; 8] {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    (t as u64 ^ std::process::id() as u64).to_le_bytes()
}

fn direct_pairs(n: usize) -> Vec<Pair> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    (0..n)
        .map(|_| {
            let client = TcpStream::connect(addr).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            (
                Box::new(client) as Box<dyn Stream>,
                Box::new(server) as Box<dyn Stream>,
            )
        })
        .collect()
}

/// Moves `per_pair` bytes client -> server on every pair at once; returns seconds.
fn run_transfer(pairs: Vec<Pair>, per_pair: usize) -> f64 {
    let started = Instant::now();
    let mut handles = Vec::new();
    for (mut client, mut server) in pairs {
        handles.push(std::thread::spawn(move || {
            let buf = vec![0x5a; CHUNK];
            let mut left = per_pair;
            while left > 0 {
                let n = left.min(CHUNK);
                client.write_all(&buf[..n]).expect("write");
                left -= n;
            }
            client.finish();
            // Read to the end before closing: a close with unread bytes (a TLS 1.3
            // server's session tickets) is a reset, and a reset makes HAProxy drop what
            // it still holds for the sink.
            let mut sink = [0u8; 4096];
            while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
        }));
        handles.push(std::thread::spawn(move || {
            let mut buf = vec![0; CHUNK];
            let mut got = 0;
            loop {
                match server.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) => panic!("read after {got} of {per_pair} bytes: {e}"),
                }
            }
            assert_eq!(got, per_pair, "bytes lost");
        }));
    }
    for h in handles {
        h.join().expect("transfer thread");
    }
    started.elapsed().as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args = parse_args();
    let pin = taskset();
    if pin {
        // Pin the load generator (this process and its threads) to CPU 0.
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
    let modes: Vec<&str> = args.modes.iter().map(String::as_str).collect();
    println!(
        "# datapath: {} MiB per run, {} repetitions interleaved, relay pinned to CPU 1 and load to CPU 0: {}",
        args.mib, args.reps, pin
    );
    println!(
        "| pairs | mode | Gbit/s median | min..max | ratio to direct | relay CPU-s/GB median |"
    );
    println!("|---|---|---|---|---|---|");
    for &n in &args.pairs {
        let per_pair = (args.mib << 20) / n.max(1);
        let mut gbps: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        for _ in 0..args.reps {
            for (m, mode) in modes.iter().enumerate() {
                let bytes = (per_pair * n) as f64;
                if *mode == "direct" {
                    let secs = run_transfer(direct_pairs(n), per_pair);
                    gbps[m].push(bytes * 8.0 / secs / 1e9);
                } else if *mode == "haproxy-tls" {
                    let h = start_haproxy_tls(pin);
                    let pairs = haproxy_tls_pairs(&h, n);
                    let cpu0 = cpu_seconds(h.child.id());
                    let secs = run_transfer(pairs, per_pair);
                    let used = cpu_seconds(h.child.id()) - cpu0;
                    gbps[m].push(bytes * 8.0 / secs / 1e9);
                    cpu[m].push(used / (bytes / 1e9));
                } else {
                    let relay = start_relay(&args.tryst, mode, pin);
                    let pairs = relay_pairs(&relay, n, *mode == "tls");
                    let cpu0 = cpu_seconds(relay.child.id());
                    let secs = run_transfer(pairs, per_pair);
                    let used = cpu_seconds(relay.child.id()) - cpu0;
                    gbps[m].push(bytes * 8.0 / secs / 1e9);
                    cpu[m].push(used / (bytes / 1e9));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let direct = median(&mut gbps[0].clone());
        for (m, mode) in modes.iter().enumerate() {
            let v = &mut gbps[m];
            let med = median(v);
            let (lo, hi) = (v[0], v[v.len() - 1]);
            let cpu_cell = if cpu[m].is_empty() {
                "-".to_owned()
            } else {
                format!("{:.3}", median(&mut cpu[m]))
            };
            println!(
                "| {n} | {mode} | {med:.2} | {lo:.2}..{hi:.2} | {:.2} | {cpu_cell} |",
                med / direct
            );
        }
    }
}
