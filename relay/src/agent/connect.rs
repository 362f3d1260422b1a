//! `tryst connect`: reach a hidden server through a relay.
//!
//! - Without `--listen`: joins stdin/stdout to one tunnel (an ssh `ProxyCommand`); exits
//!   0 when the hidden server closes its side.
//! - With `--listen ADDR`: a local port forward; every accepted connection reaches the
//!   hidden server once (a refused reach closes that connection and is logged).
//!
//! Exit codes ([`exit`]): 3 nobody parked (`not_parked`), 4 other refusals, 5 relay
//! unreachable; the message carries the relay's error code.

use super::{exit, exit_code};
use clap::Args;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt as _;
use tryst_client::conn::{self, RelayAddr, RelayStream, Timeouts};
use tryst_client::pump::{self, Counters};
use tryst_client::tls::Pin;
use tryst_engine::target::RendezvousId;

/// Arguments of `tryst connect`.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// The relay, HOST:PORT.
    #[arg(long, env = "TRYST_RELAY", value_name = "HOST:PORT")]
    pub relay: String,
    /// The rendezvous id of the hidden server.
    #[arg(long, value_name = "UUID")]
    pub id: String,
    /// Accept local connections on ADDR and reach the hidden server once per connection
    /// (a local port forward) instead of joining stdin/stdout.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// TLS to the relay's --tls-listen port (needs --pin).
    #[arg(long, requires = "pin")]
    pub tls: bool,
    /// The relay certificate's SHA-256 fingerprint (`sha256:...`).
    #[arg(long, value_name = "sha256:...", requires = "tls")]
    pub pin: Option<Pin>,
}

/// Runs `tryst connect`; returns the process exit code.
pub fn main(args: &ConnectArgs) -> i32 {
    let Ok(id) = RendezvousId::parse(&args.id) else {
        eprintln!(
            "tryst connect: --id: `{}` is not a hyphenated UUID",
            args.id
        );
        return exit::FAILURE;
    };
    let relay = match args.pin {
        Some(pin) => RelayAddr::tls(args.relay.clone(), pin),
        None => RelayAddr::plain(args.relay.clone()),
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tryst connect: starting the runtime: {e}");
            return exit::FAILURE;
        }
    };
    let code = rt.block_on(async {
        match args.listen {
            Some(addr) => listen(addr, relay, id).await,
            None => stdio(relay, id).await,
        }
    });
    // Leaves at once even if the stdin reader thread is still blocked in read(2).
    std::process::exit(code)
}

fn report(e: &tryst_client::Error, relay: &RelayAddr) -> i32 {
    let code = exit_code(e);
    match e.refusal() {
        Some(r) => eprintln!(
            "tryst connect: {} refused the reach: {} (relay error code: {})",
            relay.addr, r, r.code
        ),
        None => eprintln!("tryst connect: {e}"),
    }
    code
}

async fn stdio(relay: RelayAddr, id: RendezvousId) -> i32 {
    let (stream, early) = match conn::reach(&relay, &id, &Timeouts::default()).await {
        Ok(ok) => ok,
        Err(e) => return report(&e, &relay),
    };
    let counters = Counters::default();
    let (mut from_relay, mut to_relay) = tokio::io::split(stream);
    let mut stdout = tokio::io::stdout();
    if stdout.write_all(&early).await.is_err() || stdout.flush().await.is_err() {
        return exit::FAILURE;
    }
    let mut stdin = tokio::io::stdin();
    let up = pump::copy_direction(&mut stdin, &mut to_relay, &counters.a_to_b);
    let down = pump::copy_direction(&mut from_relay, &mut stdout, &counters.b_to_a);
    tokio::pin!(up);
    tokio::pin!(down);
    // Done when the hidden server's side ends; stdin reaching EOF only half-closes.
    let mut up_done = false;
    loop {
        tokio::select! {
            r = &mut up, if !up_done => {
                up_done = true;
                if let Err(e) = r {
                    eprintln!("tryst connect: sending: {e}");
                    return exit::FAILURE;
                }
            }
            r = &mut down => {
                return match r {
                    Ok(_) => 0,
                    Err(e) => {
                        eprintln!("tryst connect: receiving: {e}");
                        exit::FAILURE
                    }
                };
            }
        }
    }
}

async fn listen(addr: SocketAddr, relay: RelayAddr, id: RendezvousId) -> i32 {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tryst connect: --listen {addr}: {e}");
            return exit::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(local) => println!("tryst: listening on {local}"),
        Err(e) => {
            eprintln!("tryst connect: --listen {addr}: {e}");
            return exit::FAILURE;
        }
    }
    let relay = Arc::new(relay);
    loop {
        let (mut local, peer) = match listener.accept().await {
            Ok(ok) => ok,
            Err(e) => {
                // Out of descriptors and the like: keep serving the others.
                tracing::warn!("accept: {e}");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let relay = relay.clone();
        tokio::spawn(async move {
            let _ = local.set_nodelay(true);
            let (stream, early) = match conn::reach(&relay, &id, &Timeouts::default()).await {
                Ok(ok) => ok,
                Err(e) => {
                    let code = e.refusal().map_or("", |r| r.code.as_str());
                    tracing::warn!(%peer, code, "reach failed: {e}");
                    return;
                }
            };
            tracing::info!(%peer, "tunnel open");
            if local.write_all(&early).await.is_err() {
                return;
            }
            let counters = Counters::default();
            let moved = match stream {
                RelayStream::Tcp(relay) => pump::splice_join(&local, &relay, &counters).await,
                tls => pump::copy_join(local, tls, &counters).await,
            };
            match moved {
                Ok((up, down)) => tracing::info!(%peer, up, down, "tunnel closed"),
                Err(e) => tracing::info!(%peer, "tunnel ended with an error: {e}"),
            }
        });
    }
}
