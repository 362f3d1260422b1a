//! tryst-client's hot paths, as `tryst expose` and `tryst connect` run them: building a
//! park head with a fresh proof (once per park; native and Hive), and moving a tunnel's bytes over
//! loopback with `splice_join` (both agents' plain TCP legs) and `copy_join` (TLS legs,
//! stdin/stdout).
//!
//! `cargo bench -p tryst-benches --bench agents`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tryst_client::heads;
use tryst_client::pump::{self, Counters};
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

criterion_group!(benches, park_head, hive_park_head, pumps);
criterion_main!(benches);
