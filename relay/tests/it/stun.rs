//! The STUN Binding responder (`--stun-listen`) over real UDP: a stdlib-only Python
//! client that always runs, a real STUN client from Debian (`stunclient` from
//! stuntman-client, or coturn's `turnutils_stunclient`; installed by
//! scripts/test-deps.sh), and the drop counters on `/metrics`.

use crate::relay::Relay;
use crate::tunnel::series_value;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

/// A relay (one worker) with a STUN responder on an ephemeral port.
fn start() -> (Relay, SocketAddr) {
    let relay = Relay::start(&["--workers", "1", "--stun-listen", "127.0.0.1:0"]);
    let stun = relay.stun_addr.expect("started with --stun-listen");
    (relay, stun)
}

/// A Binding client written against RFC 8489 with Python's standard library only:
/// sends one malformed datagram and one request with FINGERPRINT from the same socket,
/// checks the answer's transaction id, cookie and FINGERPRINT (zlib.crc32), and prints
/// `local=<addr> mapped=<addr>`.
const PY_CLIENT: &str = r#"
import os, socket, struct, sys, zlib
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(20)
s.sendto(b"\x00\x01\x00\x00" + b"\x00" * 16, (host, port))  # wrong cookie: dropped
txid = os.urandom(12)
head = struct.pack("!HHI", 0x0001, 8, 0x2112A442) + txid
fp = (zlib.crc32(head) ^ 0x5354554E) & 0xFFFFFFFF
s.sendto(head + struct.pack("!HHI", 0x8028, 4, fp), (host, port))
data, _ = s.recvfrom(2048)
kind, length, cookie = struct.unpack("!HHI", data[:8])
assert kind == 0x0101 and cookie == 0x2112A442 and data[8:20] == txid, data.hex()
assert length + 20 == len(data), data.hex()
mapped, pos, seen_fp = None, 20, False
while pos < len(data):
    t, l = struct.unpack("!HH", data[pos:pos + 4])
    v = data[pos + 4:pos + 4 + l]
    if t == 0x0020:
        assert v[1] == 1, v.hex()
        p = struct.unpack("!H", v[2:4])[0] ^ 0x2112
        ip = bytes(a ^ b for a, b in zip(v[4:8], struct.pack("!I", 0x2112A442)))
        mapped = "%s:%d" % (socket.inet_ntoa(ip), p)
    if t == 0x8028:
        assert pos + 8 == len(data)
        want = (zlib.crc32(data[:pos]) ^ 0x5354554E) & 0xFFFFFFFF
        assert struct.unpack("!I", v)[0] == want, "fingerprint"
        seen_fp = True
    pos += 4 + ((l + 3) & ~3)
assert seen_fp
print("local=%s:%d mapped=%s" % (s.getsockname() + (mapped,)))
"#;

#[test]
fn python_stdlib_client_learns_its_own_address() {
    let (relay, stun) = start();
    let out = Command::new("python3")
        .args(["-c", PY_CLIENT, "127.0.0.1"])
        .arg(stun.port().to_string())
        .output()
        .expect("python3 (scripts/test-deps.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text.trim();
    let (local, mapped) = line
        .strip_prefix("local=")
        .and_then(|l| l.split_once(" mapped="))
        .unwrap_or_else(|| panic!("unexpected output {line:?}"));
    assert_eq!(local, mapped);
    assert!(mapped.starts_with("127.0.0.1:"), "{mapped}");
    let m = relay.metrics();
    assert_eq!(series_value(&m, "tryst_stun_answered_total"), 1, "{m}");
    assert_eq!(
        series_value(&m, "tryst_stun_dropped_total{reason=\"malformed\"}"),
        1,
        "{m}"
    );
}

#[test]
fn malformed_datagrams_are_dropped_and_counted_never_answered() {
    let (relay, stun) = start();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let txid = [3u8; 12];
    let good = tryst_relay::stun::message::binding_request(&txid, None, true);
    let mut bad_fp = good.clone();
    let n = bad_fp.len();
    bad_fp[n - 1] ^= 0xff;
    let mut indication = tryst_relay::stun::message::binding_request(&txid, None, false);
    indication[1] = 0x11;
    let mut change_request = tryst_relay::stun::message::binding_request(&txid, None, false);
    change_request[3] = 8;
    change_request.extend_from_slice(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 6]);
    for bad in [
        &b""[..],
        &b"\x00\x01"[..],
        &good[..good.len() - 1],
        &bad_fp,
        &indication,
        &change_request,
        &[0u8; 1400][..],
    ] {
        sock.send_to(bad, stun).unwrap();
    }
    // The only answer is the one to the well-formed request sent last (UDP on loopback
    // keeps order from one socket): had any bad datagram been answered, it would
    // arrive first.
    sock.send_to(&good, stun).unwrap();
    let mut buf = [0u8; 2048];
    let (len, from) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(from, stun);
    let m = tryst_relay::stun::message::parse(&buf[..len]).unwrap();
    assert_eq!(m.transaction_id, txid);
    assert_eq!(m.xor_mapped_address(), Some(sock.local_addr().unwrap()));
    assert_eq!(len, 40);
    let text = relay.metrics();
    assert_eq!(
        series_value(&text, "tryst_stun_answered_total"),
        1,
        "{text}"
    );
    for (reason, want) in [
        ("malformed", 4),
        ("bad_fingerprint", 1),
        ("not_binding_request", 1),
        ("unknown_attribute", 1),
    ] {
        let series = format!("tryst_stun_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(series_value(&text, &series), want, "{series}\n{text}");
    }
}

/// A real STUN client from Debian: stuntman's `stunclient` (exact local port), else
/// coturn's `turnutils_stunclient` (bound to 127.0.0.2 with `-L`, which proves the
/// mapped address is the datagram's source; its port is ephemeral and not printed).
#[test]
fn real_debian_stun_client() {
    let (relay, stun) = start();
    let port = stun.port().to_string();
    if let Ok(out) = Command::new("stunclient")
        .args([
            "--mode",
            "basic",
            "--localaddr",
            "127.0.0.1",
            "--localport",
            "0",
        ])
        .args(["127.0.0.1", &port])
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_else(|| panic!("no {name} in {text}"))
                .to_owned()
        };
        assert!(out.status.success(), "{text}");
        assert_eq!(field("Binding test:"), "success", "{text}");
        let local = field("Local address:");
        assert!(local.starts_with("127.0.0.1:"), "{text}");
        assert_eq!(field("Mapped address:"), local, "{text}");
        return;
    }
    let out = match Command::new("turnutils_stunclient")
        .args(["-L", "127.0.0.2", "-p", &port, "127.0.0.1"])
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!(
                "\n!!!!!!!! SKIPPED real_debian_stun_client: neither stunclient \
                 (stuntman-client) nor turnutils_stunclient (coturn) is installed ({e}); \
                 run scripts/test-deps.sh !!!!!!!!\n"
            );
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let mapped: SocketAddr = text
        .lines()
        .find_map(|l| l.split_once("UDP reflexive addr: "))
        .map(|(_, a)| a.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no reflexive address in {text:?}"));
    assert_eq!(mapped.ip().to_string(), "127.0.0.2", "{text}");
    assert_ne!(mapped.port(), 0);
    assert_ne!(mapped.port(), stun.port());
    assert_eq!(
        series_value(&relay.metrics(), "tryst_stun_answered_total"),
        1,
        "{text}"
    );
}

/// Issue 12 item 13: a device learns the STUN responder's UDP port from `/v1/health`
/// (header `tryst-stun-port`), and the body stays the Hive relay's `ok`; a relay without
/// `--stun-listen` names none.
#[test]
fn v1_health_advertises_the_stun_port() {
    let (relay, stun) = start();
    let health = relay.exchange(b"GET /v1/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
    assert!(
        health.contains(&format!("\r\ntryst-stun-port: {}\r\n", stun.port())),
        "{health}"
    );
    assert!(health.ends_with("\r\n\r\nok"), "{health}");
    let plain = Relay::start(&["--workers", "1"]);
    let health = plain.exchange(b"GET /v1/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
    assert!(!health.contains("tryst-stun-port"), "{health}");
}
