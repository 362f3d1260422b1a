//! Dead-drop throughput over HTTP: deposits per second and retrieves per second with
//! `C` concurrent clients, against any hivemind-rendezvous 0.1.2a2 compatible server
//! (tryst, or upstream's Python server for a side-by-side).
//!
//! usage: deaddrop_bench HOST:PORT [clients=8] [deposits=2000] [retrieves=400]
//!
//! The server's deposit rate limit must be raised (tryst: `--deaddrop-rate-limit`,
//! upstream: `run_server(deposit_rate_limit=...)`). Every request uses a new
//! connection (upstream speaks HTTP/1.0 and closes after each reply), so both servers
//! see the same load. Proofs are signed before the clock starts.

use base64::Engine as _;
use rsa::RsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
use sha2::{Digest as _, Sha256};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const KEY: &str = include_str!("../tests/fixtures/deaddrop/client-key.pem");
const PEM: &str = include_str!("../tests/fixtures/deaddrop/client-pub.pem");

fn exchange(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn run(addr: SocketAddr, clients: usize, bodies: Vec<String>, path: &'static str) -> f64 {
    let per = bodies.len().div_ceil(clients);
    let chunks: Vec<Vec<String>> = bodies.chunks(per.max(1)).map(<[String]>::to_vec).collect();
    let start = Instant::now();
    let threads: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            std::thread::spawn(move || {
                for b in chunk {
                    let (status, body) = exchange(addr, "POST", path, &b);
                    assert_eq!(status, 200, "{path}: {body}");
                }
            })
        })
        .collect();
    let n = bodies.len();
    for t in threads {
        t.join().expect("client thread");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr: SocketAddr = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .expect("usage: deaddrop_bench HOST:PORT [clients] [deposits] [retrieves]");
    let num = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (clients, deposits, retrieves) = (num(2, 8), num(3, 2000), num(4, 400));

    let (_, body) = exchange(addr, "GET", "/pubkey", "");
    let relay_pem =
        serde_json::from_str::<serde_json::Value>(&body).expect("pubkey json")["pubkey"]
            .as_str()
            .expect("pubkey")
            .to_owned();
    let b64 = base64::engine::general_purpose::STANDARD;
    let fingerprint = b64.encode(Sha256::digest(PEM.as_bytes()));
    let blob = "x".repeat(1024);
    let deposit_bodies: Vec<String> = (0..deposits)
        .map(|i| {
            let payload = serde_json::json!({"msg_type": "intercom", "payload": {"ciphertext": blob, "n": i, "recipient_fingerprint": fingerprint}, "metadata": {}, "route": []}).to_string();
            serde_json::json!({"payload": payload, "target_pubkey": PEM}).to_string()
        })
        .collect();
    let key = rsa::pss::BlindedSigningKey::<Sha256>::new(
        RsaPrivateKey::from_pkcs8_pem(KEY).expect("key"),
    );
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 20;
    let mut msg = b"hivemind-rendezvous-v1\0".to_vec();
    msg.extend_from_slice(PEM.as_bytes());
    msg.push(0);
    msg.extend_from_slice(relay_pem.as_bytes());
    msg.push(0);
    msg.extend_from_slice(ts.to_string().as_bytes());
    let retrieve_bodies: Vec<String> = (0..retrieves)
        .map(|_| {
            let sig = b64.encode(key.sign_with_rng(&mut rand::thread_rng(), &msg).to_bytes());
            serde_json::json!({"pubkey": PEM, "timestamp": ts, "signature": sig}).to_string()
        })
        .collect();

    let dps = run(addr, clients, deposit_bodies, "/deposit");
    let rps = run(addr, clients, retrieve_bodies, "/retrieve");
    println!("server {addr}: clients {clients}, 1 KiB payloads");
    println!("deposits/s  {dps:.0}  ({deposits} deposits)");
    println!("retrieves/s {rps:.0}  ({retrieves} retrieves, the first drains the mailbox)");
}
