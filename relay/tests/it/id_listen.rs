//! `--id-listen ADDR=UUID`: a port for one id. Its connections are clients of the
//! hidden server parked under the id with no head: no `CONNECT`, no `200`, the bytes are
//! the tunnel's from the first one (any TCP client reaches the id without an agent).

use crate::hardening::key_owning_id_on;
use crate::relay::Relay;
use crate::tunnel::{ID, read_exact_n, read_to_close, series_value};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;
use tryst_engine::driver::TEST_OWNER_KEY_ENV;

/// A relay with two workers and a port for the test id; returns it and the port.
fn relay_with_id_port() -> (Relay, SocketAddr) {
    id_port_of(Relay::start(&["--id-listen", &format!("127.0.0.1:0={ID}")]))
}

/// The relay and the address of its port for the test id.
fn id_port_of(relay: Relay) -> (Relay, SocketAddr) {
    let prefix = format!("tryst: id {ID} listening on ");
    let addr = relay
        .lines
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no id listening line in {:?}", relay.lines))
        .parse()
        .unwrap();
    (relay, addr)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

#[test]
fn a_client_on_an_id_port_reaches_the_parked_server_with_no_head() {
    // With the id owned by each worker in turn, both paths are exercised: the owner
    // pairs clients it accepted itself, and clients the other worker accepted are
    // handed over (the fixed-id hand-off). Which worker the kernel gives an accept to is
    // not ours to choose, and it can follow the owner (the worker that just took the
    // park) for a whole relay's rounds, so relays are started, alternating the owner,
    // until one has handed a client over: at most MAX_RELAYS, every exchange checked.
    const MAX_RELAYS: usize = 8;
    let mut handed_over = 0;
    let mut relays = 0;
    while handed_over == 0 && relays < MAX_RELAYS {
        let (relay, addr) = id_port_of(
            Relay::builder()
                .args(["--id-listen", &format!("127.0.0.1:0={ID}")])
                .env(
                    TEST_OWNER_KEY_ENV,
                    hex::encode(key_owning_id_on(relays % 2)),
                )
                .start(),
        );
        exchange_rounds(&relay, addr);
        handed_over += relay.metric("tryst_handoffs_total");
        relays += 1;
    }
    assert!(
        handed_over > 0,
        "no client handed over in {relays} relays of {ROUNDS} rounds"
    );
}

/// Parks a server and reaches it through the id port, [`ROUNDS`] times, checking that
/// each side gets exactly the other's bytes.
fn exchange_rounds(relay: &Relay, addr: SocketAddr) {
    for round in 0..ROUNDS {
        let mut server = relay.park();
        let mut client = connect(addr);
        // The client speaks first: the server gets exactly its bytes, no head before them.
        let ping = format!("ping {round}\n");
        client.write_all(ping.as_bytes()).unwrap();
        assert_eq!(read_exact_n(&mut server, ping.len()), ping.as_bytes());
        // And back: the client gets exactly the server's bytes, no 200 before them.
        let pong = format!("pong {round}\n");
        server.write_all(pong.as_bytes()).unwrap();
        assert_eq!(read_exact_n(&mut client, pong.len()), pong.as_bytes());
        // Half-close per direction: the client's FIN reaches the server, which can still
        // answer before closing.
        client.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        server.write_all(b"bye").unwrap();
        drop(server);
        assert_eq!(read_to_close(&mut client), "bye");
    }
    assert_eq!(
        relay.await_metric("tryst_fixed_id_reaches_total", ROUNDS),
        ROUNDS
    );
}

const ROUNDS: u64 = 8;

#[test]
fn a_server_that_speaks_first_reaches_a_silent_client_on_an_id_port() {
    // SSH servers send their banner before the client says anything.
    let (relay, addr) = relay_with_id_port();
    let mut client = connect(addr);
    // The client waits in the room until a server parks.
    assert_eq!(relay.await_metric("tryst_waiting", 1), 1);
    let mut server = relay.park();
    server.write_all(b"SSH-2.0-test\r\n").unwrap();
    assert_eq!(read_exact_n(&mut client, 14), b"SSH-2.0-test\r\n");
}

#[test]
fn an_id_port_with_nothing_parked_closes_without_a_byte() {
    let (relay, addr) = relay_with_id_port();
    let mut client = connect(addr);
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    // After the client wait (500 ms here): a clean close, no HTTP answer.
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert_eq!(
        series_value(
            &relay.metrics(),
            "tryst_rejections_total{reason=\"not_parked\"}"
        ),
        1
    );
    assert_eq!(relay.metric("tryst_fixed_id_reaches_total"), 1);
    // The port serves the next client once a server parks.
    let mut server = relay.park();
    let mut client = connect(addr);
    client.write_all(b"x").unwrap();
    assert_eq!(read_exact_n(&mut server, 1), b"x");
}
