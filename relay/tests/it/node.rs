//! node-rendezvous interop over the plain listener: a steward-style hidden server parks
//! with `CONNECT uuid:<id>?response=<TOTP>`, curl (`--digest`, `-u`) and a WebSocket-style
//! client reach it, and every node-rendezvous error comes back with its exact bytes.
//!
//! TOTP codes come from `tryst_engine::totp` and, when `oathtool` is installed
//! (scripts/test-deps.sh installs it), are cross-checked against it. The TLS listener is
//! the lead's work; these tests use `Transport::Plain`, where the node rules apply to
//! `uuid:` targets with a query string.

use crate::relay::Relay;
use crate::tunnel::{read_exact_n, read_to_close};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tryst_engine::totp::{self, TotpAlgorithm, TotpRecord};

/// The hidden server's id (mixed into targets in upper case now and then).
const ID: &str = "2f402f80-da50-11e1-9b23-0123456789ab";
/// A second id with node-rendezvous's 30 s step.
const ID30: &str = "2f402f80-da50-11e1-9b23-00000000abcd";
/// A speakeasy-style ASCII key.
const KEY: &[u8] = b"PKMLogv7SFLJubPIvgiRB7q6l7UmxmAmt6NNGWCy";
/// A step so long that no test straddles a boundary (the next one is in 2033).
const LONG_STEP: u64 = 1_000_000_000;
const OK: &[u8] = b"HTTP/1.1 200\r\n\r\n";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn record(step: u64) -> TotpRecord {
    TotpRecord::new(KEY.to_vec(), step, TotpAlgorithm::Sha1, None).unwrap()
}

fn b32() -> String {
    totp::encode_base32(KEY)
}

/// The code at `t`, from our module and (when installed) from oathtool, which must agree.
fn code_at(step: u64, t: u64) -> String {
    let ours = totp::generate(&record(step), t, 6);
    if let Ok(out) = Command::new("oathtool")
        .args([
            "--totp",
            "-s",
            &format!("{step}s"),
            "-N",
            &format!("@{t}"),
            "-b",
        ])
        .arg(b32())
        .output()
    {
        assert!(out.status.success(), "oathtool: {out:?}");
        let theirs = String::from_utf8(out.stdout).unwrap();
        assert_eq!(ours, theirs.trim(), "oathtool disagrees at t={t}");
    }
    ours
}

/// A secrets file with TOTP records for [`ID`] (long step) and [`ID30`] (30 s).
fn secrets_file(dir: &Path) -> PathBuf {
    let path = dir.join("node-secrets.toml");
    let text = format!(
        "[totp]\n\"{ID}\" = {{ base32 = \"{b}\", step = {LONG_STEP} }}\n\"{ID30}\" = {{ base32 = \"{b}\" }}\n",
        b = b32()
    );
    std::fs::write(&path, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

pub(crate) struct NodeRelay {
    pub(crate) relay: Relay,
    _dir: tempfile::TempDir,
}

fn start() -> NodeRelay {
    let dir = tempfile::tempdir().unwrap();
    let secrets = secrets_file(dir.path());
    let relay = Relay::start(&[
        "--secrets",
        secrets.to_str().unwrap(),
        "--tls-listen",
        "127.0.0.1:0",
    ]);
    NodeRelay { relay, _dir: dir }
}

fn frame(code: u16, permanent: bool, diagnostic: &str) -> String {
    format!(
        "HTTP/1.1 {code}\r\n\r\n{{\"error\":{{\"permanent\":{permanent},\"diagnostic\":\"{diagnostic}\"}}}}"
    )
}

/// Parks a steward-style hidden server and reads its exact 200.
fn park(relay: &Relay, id: &str, code: &str) -> TcpStream {
    let mut s = relay.connect();
    s.write_all(tryst_client::heads::node_park_head(id, code).as_bytes())
        .unwrap();
    assert_eq!(read_exact_n(&mut s, OK.len()), OK);
    s
}

/// Reads a request head (up to the blank line) from the hidden server's socket.
fn read_request_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "closed inside a head: {head:?}"
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// The hidden server's side of one HTTP exchange: reads the forwarded head, answers.
fn serve_one(mut server: TcpStream, body: &str) -> String {
    let head = read_request_head(&mut server);
    write!(
        server,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    server.shutdown(std::net::Shutdown::Write).unwrap();
    head
}

fn curl(args: &[&str]) -> std::process::Child {
    Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("curl is installed (scripts/test-deps.sh)")
}

#[test]
fn oathtool_and_our_totp_agree_on_the_speakeasy_vector() {
    // speakeasy's vector (protocols.md §1.4): 30 s step, t = 1400000000.
    assert_eq!(code_at(30, 1_400_000_000), "594051");
    assert_eq!(code_at(LONG_STEP, 1_400_000_000).len(), 6);
}

#[test]
fn curl_digest_and_basic_reach_a_totp_parked_hidden_server() {
    let n = start();
    let code = code_at(LONG_STEP, now());

    // Digest: curl asks without credentials, gets the challenge, retries with Digest.
    // The challenge lives on the TLS listener, as upstream's (on the plain listener a
    // request without credentials is the hivemind dead-drop's: 404).
    let server = park(&n.relay, ID, &code);
    let tls_url = format!(
        "https://127.0.0.1:{}/some/path?q=1",
        n.relay.tls_addr.unwrap().port()
    );
    let cafile = n.relay.data_dir().join("tls-cert.pem");
    let user = format!("{ID}:x");
    let cafile = cafile.to_str().unwrap();
    let child = curl(&["--cacert", cafile, "--digest", "-u", &user, &tls_url]);
    let head = serve_one(server, "hello from the hidden server\n");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the hidden server\n"
    );
    assert!(
        head.starts_with("GET /some/path?q=1 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nhost: "), "{head}");
    assert!(head.contains("\r\nuser-agent: curl/"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("authorization"),
        "{head}"
    );

    // Basic, re-parking with the same code within its step (as steward does), on the
    // plain listener: the id is in the request, so node-rendezvous serves it there too.
    let url = format!("http://{}/some/path?q=1", n.relay.addr);
    let server = park(&n.relay, &ID.to_uppercase(), &code);
    let child = curl(&["-u", &user, "-d", "ping", &url]);
    let mut server_side = server.try_clone().unwrap();
    let head = read_request_head(&mut server_side);
    assert!(
        head.starts_with("POST /some/path?q=1 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\ncontent-length: 4\r\n"), "{head}");
    assert_eq!(read_exact_n(&mut server_side, 4), b"ping");
    write!(
        server_side,
        "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\npong"
    )
    .unwrap();
    server_side.shutdown(std::net::Shutdown::Write).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pong");
}

#[test]
fn thirty_second_step_park_with_an_oathtool_code() {
    let n = start();
    // A step boundary may fall between computing the code and the relay's check; then
    // the 401 is correct and one retry in the new step must succeed.
    for attempt in 0..2 {
        let t = now();
        let code = code_at(30, t);
        let mut s = n.relay.connect();
        write!(s, "CONNECT uuid:{ID30}?response={code} HTTP/1.1\r\n\r\n").unwrap();
        // A 401 frame is longer than the 200, so these bytes decide.
        let got = read_exact_n(&mut s, OK.len());
        if got == OK {
            return;
        }
        assert!(got.starts_with(b"HTTP/1.1 401\r\n\r\n"), "{got:?}");
        assert_ne!(
            t / 30,
            now() / 30,
            "refused within its own step (attempt {attempt})"
        );
    }
    panic!("two consecutive steps refused");
}

#[test]
fn hidden_server_refusals_have_exact_bytes() {
    let n = start();
    let r = &n.relay;
    let code = code_at(LONG_STEP, now());
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let cases = [
        // 407: no (or an empty) response parameter.
        (
            format!("CONNECT uuid:{ID}? HTTP/1.1\r\n\r\n"),
            frame(407, false, "missing response parameter"),
        ),
        (
            format!("CONNECT uuid:{ID}?response= HTTP/1.1\r\n\r\n"),
            frame(407, false, "missing response parameter"),
        ),
        // 409: bytes before the 200, even with a good code.
        (
            format!("CONNECT uuid:{ID}?response={code} HTTP/1.1\r\n\r\nearly"),
            frame(
                409,
                false,
                "wait for response to CONNECT before sending data",
            ),
        ),
        // 401: wrong code, a 5-digit code (answered, never a hang), non-digits, an id
        // without a record, a target that is no UUID.
        (
            format!("CONNECT uuid:{ID}?response={wrong} HTTP/1.1\r\n\r\n"),
            frame(401, false, "invalid request"),
        ),
        (
            format!("CONNECT uuid:{ID}?response={} HTTP/1.1\r\n\r\n", &code[1..]),
            frame(401, false, "invalid request"),
        ),
        (
            format!("CONNECT uuid:{ID}?response=12a456 HTTP/1.1\r\n\r\n"),
            frame(401, false, "invalid request"),
        ),
        (
            format!(
                "CONNECT uuid:0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f?response={code} HTTP/1.1\r\n\r\n"
            ),
            frame(401, false, "invalid request"),
        ),
        (
            format!("CONNECT uuid:nope?response={code} HTTP/1.1\r\n\r\n"),
            frame(401, false, "invalid request"),
        ),
    ];
    for (request, want) in cases {
        assert_eq!(r.exchange(request.as_bytes()), want, "{request:?}");
    }
    // On the plain listener a foreign target keeps the native refusal (403 is TLS-only).
    let native = r.exchange(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n");
    assert!(
        native.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{native}"
    );
    assert!(native.contains(r#""code":"unknown_target""#), "{native}");
}

#[test]
fn mobile_refusals_have_exact_bytes() {
    let n = start();
    let r = &n.relay;
    // Without credentials: the hivemind dead-drop's 404 on the plain listener, the
    // node-rendezvous Digest challenge on TLS.
    let plain = r.exchange(b"GET /some/path HTTP/1.1\r\nHost: relay\r\n\r\n");
    assert!(plain.starts_with("HTTP/1.1 404 Not Found\r\n"), "{plain}");
    assert!(
        plain.ends_with(r#"{"reason":"not_found","status":"error"}"#),
        "{plain}"
    );
    let challenge = {
        let mut s = crate::tls::tls_connect(r);
        s.write_all(b"GET /some/path HTTP/1.1\r\nHost: relay\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let prefix = "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Digest realm=\"rendezvous\", qop=\"auth, auth-int\", nonce=\"";
    let suffix = "\", opaque=\"a4f316df3e6c55a20ca82389083849ea\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    assert!(
        challenge.starts_with(prefix) && challenge.ends_with(suffix),
        "{challenge}"
    );
    let nonce = &challenge[prefix.len()..challenge.len() - suffix.len()];
    assert!(
        nonce.len() == 32 && nonce.bytes().all(|b| b.is_ascii_hexdigit()),
        "{nonce}"
    );

    assert_eq!(
        r.exchange(b"GET /x HTTP/1.1\r\nAuthorization: Bearer abc\r\n\r\n"),
        frame(400, true, "invalid Authorization header")
    );
    // A user name that is not a UUID can never be parked: 404 at once.
    assert_eq!(
        r.exchange(b"GET /x HTTP/1.1\r\nAuthorization: Basic Ym9iOnB3\r\n\r\n"),
        frame(404, false, "UUID not registered")
    );
    // A UUID nobody parked under: 404 after the client wait.
    let basic = base64_basic(&format!("{ID}:x"));
    let req = format!("GET /x HTTP/1.1\r\nAuthorization: Basic {basic}\r\n\r\n");
    assert_eq!(
        r.exchange(req.as_bytes()),
        frame(404, false, "UUID not registered")
    );

    // The HTTP service keeps its paths.
    let metrics = r.metrics();
    assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
    assert!(metrics.contains("tryst_rejections_total"), "{metrics}");
}

fn base64_basic(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn websocket_upgrade_with_the_rendezvous_query_is_spliced() {
    let n = start();
    let code = code_at(LONG_STEP, now());
    let mut server = park(&n.relay, ID, &code);
    let mut client = n.relay.connect();
    let request = format!(
        "GET /socket?rendezvous={ID} HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    client.write_all(request.as_bytes()).unwrap();
    let head = read_request_head(&mut server);
    assert_eq!(
        head,
        format!(
            "GET /socket?rendezvous={ID} HTTP/1.1\r\nhost: relay\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
        )
    );
    let answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    server.write_all(answer).unwrap();
    assert_eq!(read_exact_n(&mut client, answer.len()), answer);
    // Frames both ways, then a close on one side closes the other.
    client.write_all(b"\x81\x05hello").unwrap();
    assert_eq!(read_exact_n(&mut server, 7), b"\x81\x05hello");
    server.write_all(b"\x81\x02ok").unwrap();
    assert_eq!(read_exact_n(&mut client, 4), b"\x81\x02ok");
    drop(server);
    assert_eq!(read_to_close(&mut client), "");
}

/// A node relay with a TLS listener too (its self-signed certificate is
/// `relay.dir/tls-cert.pem`), and a steward-style park of [`ID`] on the plain listener.
pub(crate) fn start_tls_and_park() -> (NodeRelay, TcpStream) {
    let dir = tempfile::tempdir().unwrap();
    let secrets = secrets_file(dir.path());
    let relay = Relay::start(&[
        "--secrets",
        secrets.to_str().unwrap(),
        "--tls-listen",
        "127.0.0.1:0",
    ]);
    let server = park(&relay, ID, &code_at(LONG_STEP, now()));
    (NodeRelay { relay, _dir: dir }, server)
}

/// The id [`start_tls_and_park`] parks.
pub(crate) const PARKED_ID: &str = ID;

/// Reads a request head from a hidden server's socket.
pub(crate) fn read_forwarded_head(s: &mut TcpStream) -> String {
    read_request_head(s)
}

/// A steward-style park and a WebSocket-style mobile client, paired, past the 101.
pub(crate) fn paired_websocket() -> (NodeRelay, TcpStream, TcpStream) {
    let n = start();
    let code = code_at(LONG_STEP, now());
    let mut server = park(&n.relay, ID, &code);
    let mut client = n.relay.connect();
    write!(
        client,
        "GET /socket?rendezvous={ID} HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    .unwrap();
    read_request_head(&mut server);
    let answer =
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    server.write_all(answer).unwrap();
    assert_eq!(read_exact_n(&mut client, answer.len()), answer);
    (n, server, client)
}

#[test]
fn a_newer_park_replaces_the_older_one() {
    let n = start();
    let code = code_at(LONG_STEP, now());
    let mut first = park(&n.relay, ID, &code);
    let second = park(&n.relay, ID, &code);
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(read_to_close(&mut first), "", "the older park is closed");
    // The mobile client reaches the newer one.
    let url = format!("http://{}/", n.relay.addr);
    let user = format!("{ID}:x");
    let child = curl(&["-u", &user, &url]);
    let head = serve_one(second, "second");
    assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "second", "{out:?}");
}

/// A steward-style hidden server written in Python: TLS with the relay's certificate
/// pinned, `CONNECT uuid:<id>?response=<code>`, then it echoes one HTTP request's body.
const PY_HIDDEN_SERVER: &str = r#"
import socket, ssl, sys
host, port, cafile, uuid, code = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=cafile)
s = ctx.wrap_socket(socket.create_connection((host, port)), server_hostname=host)
s.sendall(f"CONNECT uuid:{uuid}?response={code} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
ok = b""
while len(ok) < 16:
    ok += s.recv(16 - len(ok))
assert ok == b"HTTP/1.1 200\r\n\r\n", ok
print("parked", flush=True)
buf = b""
while b"\r\n\r\n" not in buf:
    chunk = s.recv(65536)
    assert chunk, "closed before the head"
    buf += chunk
head, body = buf.split(b"\r\n\r\n", 1)
lines = head.decode().split("\r\n")
assert not any(l.lower().startswith("authorization:") for l in lines), lines
length = int(next(l.split(":", 1)[1] for l in lines if l.lower().startswith("content-length:")))
while len(body) < length:
    chunk = s.recv(65536)
    assert chunk, "closed inside the body"
    body += chunk
s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
s.close()
"#;

#[test]
fn tls_python_hidden_server_and_curl_digest_client_move_a_mebibyte_each_way() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = secrets_file(dir.path());
    let relay = Relay::start(&[
        "--secrets",
        secrets.to_str().unwrap(),
        "--tls-listen",
        "127.0.0.1:0",
    ]);
    let tls = relay.tls_addr.unwrap();
    let cafile = relay.data_dir().join("tls-cert.pem");
    let code = code_at(LONG_STEP, now());
    let mut hidden = Command::new("python3")
        .arg("-c")
        .arg(PY_HIDDEN_SERVER)
        .args([
            &tls.ip().to_string(),
            &tls.port().to_string(),
            cafile.to_str().unwrap(),
            ID,
            &code,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (scripts/test-deps.sh)");
    // Wait until it is parked (it prints a line after the 200).
    let mut line = [0u8; 7];
    hidden
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .unwrap();
    assert_eq!(&line, b"parked\n");
    let upload = dir.path().join("upload.bin");
    let download = dir.path().join("download.bin");
    let payload: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&upload, &payload).unwrap();
    let url = format!("https://127.0.0.1:{}/echo", tls.port());
    let out = curl(&[
        "--cacert",
        cafile.to_str().unwrap(),
        "--digest",
        "-u",
        &format!("{ID}:any-password"),
        "--data-binary",
        &format!("@{}", upload.display()),
        "-o",
        download.to_str().unwrap(),
        &url,
    ])
    .wait_with_output()
    .unwrap();
    assert!(out.status.success(), "curl: {out:?}");
    assert!(hidden.wait().unwrap().success(), "the hidden server failed");
    assert!(
        std::fs::read(&download).unwrap() == payload,
        "echoed body differs"
    );
}

/// The same refusals over TLS, where node-rendezvous lives, including the wrong-scheme
/// 403 that exists only there; a steward-style park over TLS succeeds.
#[test]
fn hidden_server_refusals_over_tls_have_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = secrets_file(dir.path());
    let r = Relay::start(&[
        "--secrets",
        secrets.to_str().unwrap(),
        "--tls-listen",
        "127.0.0.1:0",
    ]);
    let code = code_at(LONG_STEP, now());
    let cases = [
        (
            "CONNECT example.com:443 HTTP/1.1\r\n\r\n".to_owned(),
            frame(403, false, "invalid protocol, should be uuid:"),
        ),
        (
            format!("CONNECT uuid:{ID}? HTTP/1.1\r\n\r\n"),
            frame(407, false, "missing response parameter"),
        ),
        (
            format!("CONNECT uuid:{ID}?response={code} HTTP/1.1\r\n\r\nearly"),
            frame(
                409,
                false,
                "wait for response to CONNECT before sending data",
            ),
        ),
        (
            format!("CONNECT uuid:{ID}?response=12a456 HTTP/1.1\r\n\r\n"),
            frame(401, false, "invalid request"),
        ),
    ];
    for (request, want) in cases {
        let mut s = crate::tls::tls_connect(&r);
        s.write_all(request.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        assert_eq!(String::from_utf8_lossy(&out), want, "{request:?}");
    }
    let mut s = crate::tls::tls_connect(&r);
    write!(
        s,
        "CONNECT uuid:{ID}?response={code} HTTP/1.1\r\nHost: relay\r\n\r\n"
    )
    .unwrap();
    let mut ok = [0u8; 16];
    s.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, OK);
}

#[test]
fn skew_and_park_mode_flags_change_the_node_policy() {
    let previous = code_at(LONG_STEP, now() - LONG_STEP);
    let current = code_at(LONG_STEP, now());
    assert_ne!(previous, current);
    // Upstream's policy (the default): only the current step parks.
    let strict = start();
    let mut s = strict.relay.connect();
    write!(s, "CONNECT uuid:{ID}?response={previous} HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_to_close(&mut s), frame(401, false, "invalid request"));
    drop(strict);

    // One step of skew accepts the previous code; queue mode keeps both parks.
    let dir = tempfile::tempdir().unwrap();
    let secrets = secrets_file(dir.path());
    let relay = Relay::start(&[
        "--secrets",
        secrets.to_str().unwrap(),
        "--totp-skew-steps",
        "1",
        "--node-park-mode",
        "queue",
    ]);
    let first = park(&relay, ID, &previous);
    let second = park(&relay, ID, &current);
    // The first park was not replaced: the first mobile client reaches it.
    let url = format!("http://{}/", relay.addr);
    let user = format!("{ID}:x");
    let child = curl(&["-u", &user, &url]);
    let head = serve_one(first, "first");
    assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "first", "{out:?}");
    // And the second is still parked for the next client.
    let child = curl(&["-u", &user, &url]);
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = serve_one(second, "second");
    assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "second", "{out:?}");
}

/// For the cluster tests: the node-rendezvous secrets file (TOTP records for
/// [`PARKED_ID`]) written into `dir`, to give every node.
pub(crate) fn cluster_secrets(dir: &Path) -> PathBuf {
    secrets_file(dir)
}

/// A steward-style hidden server parked over TLS on `relay` (its `--tls-listen`).
pub(crate) fn park_over_tls(relay: &Relay) -> crate::tls::Tls {
    let mut s = crate::tls::tls_connect(relay);
    let code = code_at(LONG_STEP, now());
    write!(
        s,
        "CONNECT uuid:{ID}?response={code} HTTP/1.1\r\nHost: relay\r\n\r\n"
    )
    .unwrap();
    let mut ok = [0u8; 16];
    s.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, OK);
    s
}

/// A mobile client's Basic-authenticated request for [`PARKED_ID`] (what curl sends).
pub(crate) fn mobile_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: relay\r\nAuthorization: Basic {}\r\n\r\n",
        base64_basic(&format!("{ID}:any-password"))
    )
}

/// Reads a request head from a hidden server's TLS socket.
pub(crate) fn read_forwarded_head_tls(s: &mut crate::tls::Tls) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "closed inside a head: {head:?}"
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}
