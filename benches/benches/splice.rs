//! End-to-end loopback splice throughput through a running engine, next to a direct
//! loopback connection measured in the same run.
//!
//! The bench binary is its own relay: `main` runs as an engine worker when the engine
//! re-executes it (`TRYST_WORKER` set), and as the criterion driver otherwise. Each
//! iteration moves 16 MiB client -> server over 1 or 16 already-paired tunnels.

use criterion::{Criterion, Throughput};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tryst_benches::workloads::OneSecret;
use tryst_engine::auth::{Operation, Secret, proof_header};
use tryst_engine::driver::{self, DataPath, Engine, EngineConfig, Listener};
use tryst_engine::route::{NativeRouter, NativeRouterConfig, Transport};
use tryst_engine::target::RendezvousId;

const ID: &str = "5e1f0c2d-3a4b-4c5d-8e6f-7a8b9c0d1e2f";
const SECRET: [u8; 32] = [3; 32];
const PER_ITER: usize = 16 << 20;
const CHUNK: usize = 256 * 1024;

fn id() -> RendezvousId {
    RendezvousId::parse(ID).expect("valid id")
}

fn config(path: DataPath) -> EngineConfig {
    EngineConfig {
        workers: 1,
        data_path: path,
        ..EngineConfig::default()
    }
}

fn start(path: DataPath) -> (Engine, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // The worker learns its data path from its first argument.
    let name = match path {
        DataPath::SpliceSyscall => "splice-syscall",
        DataPath::SpliceUring => "splice-uring",
    };
    let engine = Engine::start(
        &config(path),
        vec![Listener::new(listener, Transport::Plain)],
        vec![name.into()],
    )
    .expect("start engine");
    (engine, addr)
}

fn ok(s: &mut TcpStream) {
    let mut buf = [0u8; 16];
    s.read_exact(&mut buf).expect("200");
    assert_eq!(&buf, b"HTTP/1.1 200\r\n\r\n");
}

fn tunnels(addr: SocketAddr, n: usize) -> Vec<(TcpStream, TcpStream)> {
    let secret = Secret::new(SECRET.to_vec());
    (0..n)
        .map(|i| {
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let nonce: Vec<u8> = (0..16).map(|_| rand_byte(i)).collect();
            let value = proof_header(&secret, Operation::Park, &id(), ts, &nonce);
            let mut server = TcpStream::connect(addr).expect("connect");
            server
                .write_all(
                    format!("CONNECT uuid:{ID} HTTP/1.1\r\nProxy-Authorization: {value}\r\n\r\n")
                        .as_bytes(),
                )
                .expect("park");
            ok(&mut server);
            let mut client = TcpStream::connect(addr).expect("connect");
            client
                .write_all(format!("CONNECT uuid:{ID} HTTP/1.1\r\n\r\n").as_bytes())
                .expect("reach");
            ok(&mut client);
            (client, server)
        })
        .collect()
}

fn rand_byte(salt: usize) -> u8 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (t as usize ^ salt.wrapping_mul(2_654_435_761)) as u8
}

fn direct(n: usize) -> Vec<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    (0..n)
        .map(|_| {
            let c = TcpStream::connect(addr).expect("connect");
            let (s, _) = listener.accept().expect("accept");
            (c, s)
        })
        .collect()
}

/// Moves PER_ITER bytes in total over the pairs, client to server.
fn transfer(pairs: &[(TcpStream, TcpStream)]) {
    let per = PER_ITER / pairs.len();
    std::thread::scope(|scope| {
        for (c, s) in pairs {
            scope.spawn(move || {
                let buf = vec![0x42u8; CHUNK];
                let mut left = per;
                let mut c = c;
                while left > 0 {
                    let n = left.min(CHUNK);
                    c.write_all(&buf[..n]).expect("write");
                    left -= n;
                }
            });
            scope.spawn(move || {
                let mut buf = vec![0u8; CHUNK];
                let mut got = 0;
                let mut s = s;
                while got < per {
                    let n = s.read(&mut buf).expect("read");
                    assert!(n > 0, "tunnel closed early");
                    got += n;
                }
            });
        }
    });
}

fn bench(c: &mut Criterion) {
    let (mut syscall, syscall_addr) = start(DataPath::SpliceSyscall);
    let (mut uring, uring_addr) = start(DataPath::SpliceUring);
    let mut group = c.benchmark_group("splice_throughput");
    group.throughput(Throughput::Bytes(PER_ITER as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    for n in [1usize, 16] {
        let d = direct(n);
        group.bench_function(format!("direct/{n}_pairs"), |b| b.iter(|| transfer(&d)));
        let t = tunnels(syscall_addr, n);
        group.bench_function(format!("splice_syscall/{n}_pairs"), |b| {
            b.iter(|| transfer(&t))
        });
        let t = tunnels(uring_addr, n);
        group.bench_function(format!("splice_uring/{n}_pairs"), |b| {
            b.iter(|| transfer(&t))
        });
    }
    group.finish();
    for engine in [&mut syscall, &mut uring] {
        let _ = engine.begin_shutdown();
    }
    for engine in [&mut syscall, &mut uring] {
        while !engine.poll_workers().unwrap_or(true) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn main() {
    if driver::is_worker() {
        let secrets = OneSecret::new(id(), &Secret::new(SECRET.to_vec()));
        let router = NativeRouter::new(secrets, NativeRouterConfig::default());
        let path = match std::env::args().nth(1).as_deref() {
            Some("splice-uring") => DataPath::SpliceUring,
            _ => DataPath::SpliceSyscall,
        };
        if let Err(e) = driver::run_worker(&config(path), router, None) {
            eprintln!("splice bench worker: {e}");
            std::process::exit(1);
        }
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
