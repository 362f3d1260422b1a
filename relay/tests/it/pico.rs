//! The Pico Rendezvous Point API end to end through `tryst serve`: every row of the
//! state table in protocols.md §2.3 (exact status, headers and bodies), preflight, the
//! body limit, the caps, and a libpico-style framed conversation both ways.
//!
//! Ordering without sleeps: two requests of the same role race on one channel; exactly
//! one is refused with 404 at once, which proves the other is the waiting party.

use crate::relay::Relay;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

const OK: &str = "{\"status\": \"ok\", \"code\": 0}\n";
const TIMEOUT: &str = "{\"status\": \"error\", \"code\": 2, \"message\": \"request timed out\"}\n";
const CLOSED: &str = "{\"status\": \"ok\", \"code\": -1, \"message\": \"channel closed\"}\n";
const NO_RESOURCE: &str = "\n<html>\n  <head><title>404 - No Such Resource</title></head>\n  <body>\n    <h1>No Such Resource</h1>\n    <p>Sorry. No luck finding that resource.</p>\n  </body>\n</html>\n";

/// A parsed response: status, headers (lower-case names, `date` removed), body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn send(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n");
    if method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s
}

fn receive(mut s: TcpStream) -> Resp {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse(&raw)
}

fn parse(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(": ").unwrap();
            (n.to_ascii_lowercase(), v.to_owned())
        })
        .filter(|(n, _)| n != "date")
        .collect();
    Resp {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Resp {
    receive(send(addr, method, path, body))
}

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// The exact answer carrying a JSON status line of the Pico protocol.
fn json(body: &str) -> Resp {
    Resp {
        status: 200,
        headers: h(&[
            ("content-type", "application/json"),
            ("access-control-allow-origin", "*"),
            ("connection", "close"),
            ("content-length", &body.len().to_string()),
        ]),
        body: body.as_bytes().to_vec(),
    }
}

/// The exact answer carrying a message.
fn data(body: &[u8]) -> Resp {
    Resp {
        status: 200,
        headers: h(&[
            ("content-type", "application/octet-stream"),
            ("access-control-allow-origin", "*"),
            ("connection", "close"),
            ("content-length", &body.len().to_string()),
        ]),
        body: body.to_vec(),
    }
}

fn not_found() -> Resp {
    Resp {
        status: 404,
        headers: h(&[
            ("content-type", "text/html"),
            ("access-control-allow-origin", "*"),
            ("connection", "close"),
            ("content-length", &NO_RESOURCE.len().to_string()),
        ]),
        body: NO_RESOURCE.as_bytes().to_vec(),
    }
}

/// Sends two requests of the same role to `path`; one is refused with 404 at once.
/// Returns the other, still waiting (its stream not yet read).
fn one_waiting(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> TcpStream {
    let a = send(addr, method, path, body);
    let b = send(addr, method, path, body);
    // Whichever has bytes first is the refused one (`peek` consumes nothing). The
    // short read timeout only paces the alternation; no clone of a stream is kept, so
    // dropping the returned stream closes the connection.
    let t0 = Instant::now();
    let refused_is_a = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "neither was refused"
        );
        if has_bytes(&a) {
            break true;
        }
        if has_bytes(&b) {
            break false;
        }
    };
    let (refused, waiting) = if refused_is_a { (a, b) } else { (b, a) };
    refused.set_read_timeout(None).unwrap();
    waiting.set_read_timeout(None).unwrap();
    assert_eq!(
        receive(refused),
        not_found(),
        "the second waiting party is refused"
    );
    waiting
}

/// True if `s` has response bytes within a few milliseconds.
fn has_bytes(s: &TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    matches!(s.peek(&mut [0u8; 1]), Ok(n) if n > 0)
}

fn short_relay() -> Relay {
    Relay::http(&["--pico-wait", "300ms"])
}

#[test]
fn new_returns_a_fresh_32_hex_name() {
    let relay = short_relay();
    let r = request(relay.addr, "GET", "/new", b"");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers,
        h(&[
            ("content-type", "text/html"),
            ("access-control-allow-origin", "*"),
            ("connection", "close"),
            ("content-length", "32"),
        ])
    );
    assert_eq!(r.body.len(), 32);
    assert!(
        r.body
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    );
    assert_ne!(r.body, request(relay.addr, "GET", "/new", b"").body);
    assert_eq!(request(relay.addr, "POST", "/new", b"x").status, 405);
}

#[test]
fn standby_waits_time_out_with_code_2_and_return_to_standby() {
    let relay = short_relay();
    // Standby + GET: waits, then code 2.
    assert_eq!(request(relay.addr, "GET", "/channel/c", b""), json(TIMEOUT));
    // Standby + POST: waits, then code 2; the message is dropped.
    assert_eq!(
        request(relay.addr, "POST", "/channel/c", b"m"),
        json(TIMEOUT)
    );
    assert_eq!(request(relay.addr, "GET", "/channel/c", b""), json(TIMEOUT));
}

#[test]
fn read_waiting_then_post_delivers_and_second_reader_is_404() {
    let relay = Relay::http(&["--pico-wait", "20s"]);
    let msg: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let reader = one_waiting(relay.addr, "GET", "/channel/rw", b"");
    assert_eq!(request(relay.addr, "POST", "/channel/rw", &msg), json(OK));
    assert_eq!(receive(reader), data(&msg));
}

#[test]
fn write_waiting_then_get_delivers_and_second_writer_is_404() {
    let relay = Relay::http(&["--pico-wait", "20s"]);
    let writer = one_waiting(relay.addr, "POST", "/channel/wr", b"\0hello\xff");
    assert_eq!(
        request(relay.addr, "GET", "/channel/wr", b""),
        data(b"\0hello\xff")
    );
    assert_eq!(receive(writer), json(OK));
    // Back to standby: a new exchange works in the other order.
    let reader = one_waiting(relay.addr, "GET", "/channel/wr", b"");
    assert_eq!(request(relay.addr, "POST", "/channel/wr", b""), json(OK));
    assert_eq!(receive(reader), data(b""));
}

#[test]
fn a_vanished_writer_frees_the_slot_and_its_message_is_dropped() {
    let relay = Relay::http(&["--pico-wait", "2s"]);
    let t0 = Instant::now();
    let writer = one_waiting(relay.addr, "POST", "/channel/v", b"lost");
    drop(writer);
    // Until the relay notices the close, the slot is taken (404). Then a new writer
    // parks (and times out with code 2): the slot was in standby, so the lost message
    // was not kept. That happens long before the vanished writer's own 2 s wait ends.
    loop {
        let sent = t0.elapsed();
        let r = request(relay.addr, "POST", "/channel/v", b"new");
        if r == not_found() {
            assert!(t0.elapsed() < Duration::from_secs(10), "slot never freed");
            continue;
        }
        assert_eq!(r, json(TIMEOUT));
        assert!(
            sent < Duration::from_millis(1500),
            "freed by the disconnect, not by the wait ending ({sent:?})"
        );
        break;
    }
}

#[test]
fn delete_answers_ok_and_the_waiting_party_hears_code_minus_1() {
    let relay = Relay::http(&["--pico-wait", "20s"]);
    let reader = one_waiting(relay.addr, "GET", "/channel/d", b"");
    assert_eq!(request(relay.addr, "DELETE", "/channel/d", b""), json(OK));
    assert_eq!(receive(reader), json(CLOSED));
    // The same for a waiting writer; and DELETE of a channel nobody used is fine.
    let writer = one_waiting(relay.addr, "POST", "/channel/d", b"x");
    assert_eq!(request(relay.addr, "DELETE", "/channel/d", b""), json(OK));
    assert_eq!(receive(writer), json(CLOSED));
    assert_eq!(
        request(relay.addr, "DELETE", "/channel/never", b""),
        json(OK)
    );
}

#[test]
fn channels_expire_after_their_lifetime_with_code_minus_1() {
    let relay = Relay::http(&["--pico-wait", "20s", "--pico-channel-ttl", "700ms"]);
    let t0 = Instant::now();
    assert_eq!(request(relay.addr, "GET", "/channel/e", b""), json(CLOSED));
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(600), "{took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
}

#[test]
fn preflight_is_204_with_the_cors_trio() {
    let relay = short_relay();
    for path in ["/new", "/channel/x", "/channel/"] {
        let r = request(relay.addr, "OPTIONS", path, b"");
        assert_eq!(
            r,
            Resp {
                status: 204,
                headers: h(&[
                    ("access-control-allow-origin", "*"),
                    ("access-control-allow-methods", "GET, POST, OPTIONS"),
                    (
                        "access-control-allow-headers",
                        "Origin, X-Requested-With, Content-Type, Accept"
                    ),
                    ("connection", "close"),
                ]),
                body: Vec::new(),
            },
            "{path}"
        );
    }
}

#[test]
fn bodies_up_to_1_mib_pass_and_larger_ones_are_413() {
    let relay = Relay::http(&["--pico-wait", "20s"]);
    let big: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i * 7 % 251) as u8).collect();
    let reader = one_waiting(relay.addr, "GET", "/channel/big", b"");
    assert_eq!(request(relay.addr, "POST", "/channel/big", &big), json(OK));
    assert_eq!(receive(reader), data(&big));

    let mut s = TcpStream::connect(relay.addr).unwrap();
    write!(
        s,
        "POST /channel/big HTTP/1.1\r\nHost: r\r\nContent-Length: {}\r\n\r\n",
        1024 * 1024 + 1
    )
    .unwrap();
    let r = receive(s);
    assert_eq!(r.status, 413);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.body,
        br#"{"error":{"code":"body_too_large","message":"request body too large"}}"#
    );
}

#[test]
fn caps_on_channels_and_waiting_requests_answer_503() {
    let relay = Relay::http(&[
        "--pico-wait",
        "20s",
        "--pico-max-channels",
        "2",
        "--pico-max-waiting",
        "1",
    ]);
    let addr = relay.addr;
    // Channel b exists, in standby.
    let writer = thread::spawn(move || request(addr, "POST", "/channel/b", b"1"));
    assert_eq!(request(addr, "GET", "/channel/b", b""), data(b"1"));
    assert_eq!(writer.join().unwrap(), json(OK));
    // A reader waits on a: two channels, one waiting party.
    let reader = one_waiting(addr, "GET", "/channel/a", b"");
    let full = |code: &str, message: &str| {
        let body = format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#);
        Resp {
            status: 503,
            headers: h(&[
                ("content-type", "application/json"),
                ("access-control-allow-origin", "*"),
                ("retry-after", "1"),
                ("connection", "close"),
                ("content-length", &body.len().to_string()),
            ]),
            body: body.into_bytes(),
        }
    };
    assert_eq!(
        request(addr, "POST", "/channel/c", b"x"),
        full("pico_channels_full", "too many channels")
    );
    assert_eq!(
        request(addr, "GET", "/channel/b", b""),
        full("pico_waiting_full", "too many waiting requests")
    );
    // A request that completes an exchange is still served.
    assert_eq!(request(addr, "POST", "/channel/a", b"2"), json(OK));
    assert_eq!(receive(reader), data(b"2"));
}

/// libpico's framing: a 4-byte big-endian length, then the payload, in one POST.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Writes like jpico/libpico: code 2 means "repost the same bytes".
fn pico_write(addr: SocketAddr, path: &str, payload: &[u8]) {
    let body = frame(payload);
    loop {
        let r = request(addr, "POST", path, &body);
        if r == json(TIMEOUT) {
            continue;
        }
        assert_eq!(r, json(OK));
        return;
    }
}

/// Reads like jpico/libpico: code 2 means "poll again"; strips the length prefix.
fn pico_read(addr: SocketAddr, path: &str) -> Vec<u8> {
    loop {
        let r = request(addr, "GET", path, b"");
        if r == json(TIMEOUT) {
            continue;
        }
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        let (len, payload) = r.body.split_at(4);
        let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
        assert_eq!(len, payload.len());
        return payload.to_vec();
    }
}

#[test]
fn libpico_framed_conversation_both_ways_over_a_channel_pair() {
    let relay = Relay::http(&["--pico-wait", "200ms"]);
    let addr = relay.addr;
    let name = |r: Resp| String::from_utf8(r.body).unwrap();
    let up = format!("/channel/{}", name(request(addr, "GET", "/new", b"")));
    let down = format!("/channel/{}", name(request(addr, "GET", "/new", b"")));
    let message = |side: u8, i: usize| -> Vec<u8> {
        (0..(i * 997) % 20_000)
            .map(|j| (j as u8) ^ side ^ (i as u8))
            .collect()
    };
    const N: usize = 12;
    let (up2, down2) = (up.clone(), down.clone());
    // The "server": reads a request, answers it.
    let server = thread::spawn(move || {
        for i in 0..N {
            assert_eq!(pico_read(addr, &up2), message(1, i), "request {i}");
            pico_write(addr, &down2, &message(2, i));
        }
    });
    // The "client": sends a request, reads the answer.
    for i in 0..N {
        pico_write(addr, &up, &message(1, i));
        assert_eq!(pico_read(addr, &down), message(2, i), "answer {i}");
    }
    server.join().unwrap();
}

/// Reads one response (head plus Content-Length body) from a kept-alive connection.
fn read_one(s: &mut TcpStream) -> Resp {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "connection closed early");
        raw.push(byte[0]);
    }
    let head = parse(&raw);
    let len: usize = head
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    raw.extend_from_slice(&body);
    parse(&raw)
}

#[test]
fn requests_share_a_kept_alive_connection_like_libcurl() {
    let relay = Relay::http(&["--pico-wait", "300ms"]);
    let mut s = TcpStream::connect(relay.addr).unwrap();
    s.write_all(b"GET /new HTTP/1.1\r\nHost: r\r\n\r\n")
        .unwrap();
    let name = String::from_utf8(read_one(&mut s).body).unwrap();
    assert_eq!(name.len(), 32);
    let path = format!("/channel/{name}");
    // A timed-out read, then a write picked up by a reader on another connection,
    // then a preflight: all on the same connection.
    write!(s, "GET {path} HTTP/1.1\r\nHost: r\r\n\r\n").unwrap();
    let mut timed_out = json(TIMEOUT);
    timed_out.headers.retain(|(n, _)| n != "connection");
    assert_eq!(read_one(&mut s), timed_out);

    let addr = relay.addr;
    let path2 = path.clone();
    let reader = thread::spawn(move || {
        loop {
            let r = request(addr, "GET", &path2, b"");
            if r != json(TIMEOUT) {
                return r;
            }
        }
    });
    loop {
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: r\r\nContent-Type: application/octet-stream\r\nContent-Length: 3\r\n\r\nabc"
        )
        .unwrap();
        let r = read_one(&mut s);
        if r.body == TIMEOUT.as_bytes() {
            continue;
        }
        assert_eq!(r.body, OK.as_bytes());
        assert_eq!(r.header("content-type"), Some("application/json"));
        break;
    }
    assert_eq!(reader.join().unwrap(), data(b"abc"));
    write!(s, "OPTIONS {path} HTTP/1.1\r\nHost: r\r\n\r\n").unwrap();
    assert_eq!(read_one(&mut s).status, 204);
}

#[test]
fn metrics_report_channels_and_waiting_parties() {
    let relay = Relay::http(&["--pico-wait", "20s"]);
    let gauges = |relay: &Relay| {
        let body = request(relay.addr, "GET", "/metrics", b"").body;
        let text = String::from_utf8(body).unwrap();
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
                .unwrap_or_else(|| panic!("{name} missing from {text}"))
                .to_owned()
        };
        (value("tryst_pico_channels"), value("tryst_pico_waiting"))
    };
    assert_eq!(gauges(&relay), ("0".into(), "0".into()));
    let reader = one_waiting(relay.addr, "GET", "/channel/m", b"");
    assert_eq!(gauges(&relay), ("1".into(), "1".into()));
    assert_eq!(request(relay.addr, "POST", "/channel/m", b"hi"), json(OK));
    assert_eq!(receive(reader), data(b"hi"));
    assert_eq!(gauges(&relay), ("1".into(), "0".into()));
}
