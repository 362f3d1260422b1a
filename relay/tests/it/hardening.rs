//! Issue #12, the engine items: bytes that can never be HTTP, the fd budget for
//! handed-over connections, the SIGTERM drain, gauges after a worker crash and
//! node-rendezvous half-close. Each test starts its own relay (tunnel.rs's launcher).

use crate::tunnel::{Relay, read_to_close};
use std::io::Write;
use std::time::{Duration, Instant};
use tryst_engine::reject::Rejection;

/// 100 NULs, a TLS ClientHello on the plain port and `\x80abc` are answered with the
/// exact `400 malformed_head` at once, although the head deadline is a minute away.
#[test]
fn bytes_that_can_never_be_http_get_400_before_the_head_deadline() {
    let relay = Relay::start(&["--head-timeout", "60s"]);
    // The first bytes of a real TLS 1.2/1.3 ClientHello record (no line end in sight).
    let mut client_hello = vec![0x16, 0x03, 0x01, 0x00, 0xf8, 0x01, 0x00, 0x00, 0xf4, 0x03];
    client_hello.extend_from_slice(&[0x03; 32]);
    let cases: [(&str, Vec<u8>); 3] = [
        ("100 NULs", vec![0u8; 100]),
        ("TLS ClientHello", client_hello),
        ("\\x80abc", b"\x80abc".to_vec()),
    ];
    let want = String::from_utf8(Rejection::MalformedHead.response()).unwrap();
    for (name, bytes) in cases {
        let started = Instant::now();
        let mut s = relay.connect();
        // Far below the 60 s head deadline: a 408 could not arrive before this fails.
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(&bytes).unwrap();
        // The connection stays open on our side: only the relay's answer ends the read.
        let response = read_to_close(&mut s);
        assert_eq!(response, want, "{name}");
        assert!(started.elapsed() < Duration::from_secs(20), "{name}");
    }
    assert_eq!(
        crate::tunnel::series_value(
            &relay.metrics(),
            "tryst_rejections_total{reason=\"malformed_head\"}"
        ),
        3
    );
}
