//! A hidden server in a few lines: keep 4 connections parked at a relay under an id and
//! forward each client to a local TCP service (what `tryst expose` does).
//!
//! ```sh
//! TRYST_SECRET=<secret printed by tryst provision> \
//!   cargo run -p tryst-client --example expose -- 127.0.0.1:7400 <uuid> 127.0.0.1:22
//! ```

use std::time::Duration;
use tryst_client::conn::{RelayAddr, Timeouts};
use tryst_client::expose::{Exposer, ParkAuth, Service};
use tryst_engine::target::RendezvousId;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [relay, id, local] = args.as_slice() else {
        return Err("usage: expose RELAY:PORT UUID LOCAL:PORT (secret in TRYST_SECRET)".into());
    };
    let secret = tryst_client::secret::decode(&std::env::var("TRYST_SECRET")?)?;
    let exposer = Exposer::new(Service {
        name: id.clone(),
        relay: RelayAddr::plain(relay.clone()),
        auth: ParkAuth::Native {
            id: RendezvousId::parse(id).map_err(|e| format!("{id}: {e}"))?,
            secret,
        },
        local: local.clone(),
        pool: 4,
        timeouts: Timeouts::default(),
        backoff: (Duration::from_millis(250), Duration::from_secs(30)),
        drain: Duration::from_secs(10),
    });
    // Ctrl-C stops parking and drains open tunnels.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    exposer.run(stopped).await?;
    Ok(())
}
