//! tryst-client's hot paths, as `tryst expose` and `tryst connect` run them: building a
//! park head with a fresh proof (once per park; native and Hive), and moving a tunnel's bytes over
//! loopback with `splice_join` (both agents' plain TCP legs) and `copy_join` (TLS legs,
//! stdin/stdout), and one reach of `tryst connect --listen` against a stand-in relay,
//! pipelined (`splice_reach`) on a spare relay connection (`spare::Spares`) or a new one,
//! and waiting for the 200 first.
//!
//! `cargo bench -p tryst-benches --bench agents`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tryst_client::pump::{self, Counters};
use tryst_client::spare::{SpareConfig, Spares};
use tryst_client::{conn, heads};
use tryst_engine::auth::Secret;
use tryst_engine::target::RendezvousId;

const BYTES: usize = 16 << 20;

fn park_head(c: &mut Criterion) {
    let id = RendezvousId::parse("0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f").unwrap();
    let secret = Secret::new(vec![7; 32]);
    c.bench_function("agents/park head with a fresh proof", |b| {
        b.iter(|| heads::park_head_now(&id, &secret))
    });
}

/// A Hive device's park head: a fresh `Hive` proof (one Ed25519 signature) with the
/// publication reused, and with it re-signed (a second signature and its base64), as
/// `Publisher` does once per `min(ttl/2, 60 s)`.
fn hive_park_head(c: &mut Criterion) {
    use tryst_client::hive::{Device, HiveTarget, Publisher};
    let device = Device {
        target: HiveTarget {
            workspace: [0x7e; 16],
            device: [1; 16],
        },
        account: [0x11; 16],
        key: ed25519_dalek::SigningKey::from_bytes(&[5; 32]),
    };
    let publisher = Publisher::new(device, 120);
    c.bench_function("agents/hive park head, publication reused", |b| {
        b.iter(|| publisher.park_head_at(1_795_327_200, &[3; 16]))
    });
    let mut now = 1_795_327_200;
    c.bench_function("agents/hive park head, publication re-signed", |b| {
        b.iter(|| {
            now += 60;
            publisher.park_head_at(now, &[3; 16])
        })
    });
}

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (a.unwrap(), b.unwrap().0)
}

/// `BYTES` from one outer socket through the joined pair to the other, then EOF.
async fn one_transfer(splice: bool, payload: &[u8]) {
    let (mut source, a) = pair().await;
    let (b, mut sink) = pair().await;
    let counters = Counters::default();
    let join = async {
        if splice {
            pump::splice_join(&a, &b, &counters).await
        } else {
            pump::copy_join(a, b, &counters).await
        }
    };
    let send = async {
        source.write_all(payload).await.unwrap();
        source.shutdown().await.unwrap();
    };
    let receive = async {
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0;
        loop {
            match sink.read(&mut buf).await.unwrap() {
                0 => break,
                k => n += k,
            }
        }
        sink.shutdown().await.unwrap();
        n
    };
    let (moved, (), n) = tokio::join!(join, send, receive);
    moved.unwrap();
    assert_eq!(n, payload.len());
}

fn pumps(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let payload = vec![0x5a; BYTES];
    let mut group = c.benchmark_group("agents/pump 16 MiB over loopback");
    group.throughput(Throughput::Bytes(BYTES as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for (name, splice) in [("splice_join", true), ("copy_join", false)] {
        group.bench_function(name, |b| {
            b.iter(|| rt.block_on(one_transfer(splice, &payload)))
        });
    }
    group.finish();
}

/// Stands in for the relay: answers every head with a 200, then echoes whatever
/// followed the head and everything after it until EOF.
async fn fake_relay() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut have = 0;
                let end = loop {
                    let n = s.read(&mut buf[have..]).await.unwrap();
                    assert!(n > 0, "closed before a complete head");
                    have += n;
                    if let Some(i) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                s.write_all(b"HTTP/1.1 200\r\n\r\n").await.unwrap();
                s.write_all(&buf[end..have]).await.unwrap();
                let (mut r, mut w) = s.split();
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            });
        }
    });
    addr
}

/// One reach as `tryst connect --listen` makes it, against [`fake_relay`]: a local
/// client sends 64 bytes and waits for their echo. `pipelined`: the client's bytes go
/// out right after the head ([`pump::splice_reach`]); otherwise the 200 is awaited
/// first ([`conn::answer`], then [`pump::splice_join`]). With `spares`, the relay
/// connection is a spare when one is ready (as `tryst connect --listen --spares N`
/// takes it), else a new one.
async fn one_reach(relay_addr: std::net::SocketAddr, pipelined: bool, spares: Option<&Spares>) {
    const HEAD: &[u8] = b"CONNECT uuid:0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f HTTP/1.1\r\n\r\n";
    let (mut outer, local) = pair().await;
    let mut relay = match spares.and_then(Spares::take) {
        Some(conn::RelayStream::Tcp(s)) => s,
        _ => {
            let s = TcpStream::connect(relay_addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            s
        }
    };
    relay.write_all(HEAD).await.unwrap();
    outer.write_all(&[7; 64]).await.unwrap();
    let counters = Counters::default();
    let agent = async {
        if pipelined {
            pump::splice_reach(&local, &mut relay, Duration::from_secs(10), &counters)
                .await
                .unwrap()
                .unwrap();
        } else {
            let early = conn::answer(&mut relay, Duration::from_secs(10))
                .await
                .unwrap();
            let mut local = local;
            local.write_all(&early).await.unwrap();
            pump::splice_join(&local, &relay, &counters).await.unwrap();
        }
    };
    let client = async {
        let mut echo = [0u8; 64];
        outer.read_exact(&mut echo).await.unwrap();
        outer.shutdown().await.unwrap();
        let mut rest = Vec::new();
        outer.read_to_end(&mut rest).await.unwrap();
    };
    tokio::join!(agent, client);
}

fn reaches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let relay = rt.block_on(fake_relay());
    let spares = rt.block_on(async {
        Spares::start(
            conn::RelayAddr::plain(relay.to_string()),
            SpareConfig {
                count: 4,
                ..SpareConfig::default()
            },
        )
    });
    let mut group = c.benchmark_group("agents/reach and 64 B echo through a stand-in relay");
    for (name, pipelined, spares) in [
        ("pipelined on a spare (--spares 4)", true, Some(&spares)),
        ("pipelined (splice_reach)", true, None),
        ("200 first", false, None),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| rt.block_on(one_reach(relay, pipelined, spares)))
        });
    }
    group.finish();
    let stats = spares.stats();
    eprintln!(
        "spares: {} takes found one, {} found none",
        stats.used.load(std::sync::atomic::Ordering::Relaxed),
        stats.missed.load(std::sync::atomic::Ordering::Relaxed)
    );
}

criterion_group!(benches, park_head, hive_park_head, pumps, reaches);
criterion_main!(benches);
