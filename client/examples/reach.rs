//! A client in a few lines: reach the hidden server parked under an id, send one line,
//! print what comes back until the server closes (what `tryst connect` does with
//! stdin/stdout).
//!
//! ```sh
//! cargo run -p tryst-client --example reach -- 127.0.0.1:7400 <uuid> 'GET / HTTP/1.0'
//! ```

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tryst_client::conn::{self, RelayAddr, Timeouts};
use tryst_engine::target::RendezvousId;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [relay, id, line] = args.as_slice() else {
        return Err("usage: reach RELAY:PORT UUID LINE".into());
    };
    let id = RendezvousId::parse(id).map_err(|e| format!("{id}: {e}"))?;
    // A refusal carries the relay's status and code, e.g. `404 not_parked`.
    let (mut stream, early) =
        conn::reach(&RelayAddr::plain(relay.clone()), &id, &Timeouts::default()).await?;
    stream
        .write_all(format!("{line}\r\n\r\n").as_bytes())
        .await?;
    let mut answer = early;
    stream.read_to_end(&mut answer).await?;
    print!("{}", String::from_utf8_lossy(&answer));
    Ok(())
}
