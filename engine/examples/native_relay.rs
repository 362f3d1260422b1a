//! A minimal native relay over the engine, for engine development without the relay
//! crate: `native_relay <listen addr> <workers> <uuid>=<secret-hex>...`. HTTP requests
//! are answered 404 by the supervisor thread. Not the product: use `tryst serve`.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use tryst_engine::auth::{MacKey, Secret};
use tryst_engine::driver::{self, Engine, EngineConfig, Listener};
use tryst_engine::route::{NativeRouter, NativeRouterConfig, ReloadError, SecretSource, Transport};
use tryst_engine::target::RendezvousId;

struct StaticSecrets(HashMap<RendezvousId, MacKey>);

impl SecretSource for StaticSecrets {
    fn mac_key(&self, id: &RendezvousId) -> Option<&MacKey> {
        self.0.get(id)
    }
    fn reload(&mut self) -> Result<(), ReloadError> {
        Ok(())
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut secrets = HashMap::new();
    for kv in args.iter().skip(2) {
        if let Some((id, hex)) = kv.split_once('=') {
            let id = RendezvousId::parse(id).map_err(std::io::Error::other)?;
            secrets.insert(
                id,
                MacKey::new(&Secret::new(
                    hex::decode(hex).map_err(std::io::Error::other)?,
                )),
            );
        }
    }
    let mut config = EngineConfig {
        workers: args.get(1).and_then(|w| w.parse().ok()).unwrap_or(2),
        ..EngineConfig::default()
    };
    if std::env::var("NATIVE_RELAY_DATA_PATH").is_ok_and(|p| p == "splice-uring") {
        config.data_path = driver::DataPath::SpliceUring;
    }
    if driver::is_worker() {
        let router = NativeRouter::new(StaticSecrets(secrets), NativeRouterConfig::default());
        return driver::run_worker(&config, router, None);
    }
    let listener = TcpListener::bind(args.first().map(String::as_str).unwrap_or("127.0.0.1:0"))?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let mut engine = Engine::start(
        &config,
        vec![Listener::new(listener, Transport::Plain)],
        std::env::args_os().skip(1).collect(),
    )?;
    loop {
        while let Some(mut conn) = engine.http_inbox().try_recv()? {
            let _ = conn.stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
        if engine.poll_workers()? {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
