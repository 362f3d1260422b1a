//! `tryst connect`: reach a hidden server through a relay.
//!
//! - Without `--listen`: joins stdin/stdout to one tunnel (an ssh `ProxyCommand`); exits
//!   0 when the hidden server closes its side.
//! - With `--fdpass`: passes the relay connection itself over stdout once the reach is
//!   answered (ssh's `ProxyUseFdpass`) and exits 0; nothing stays between ssh and the
//!   relay.
//! - With `--listen ADDR`: a local port forward; every accepted connection reaches the
//!   hidden server once (a refused reach closes that connection and is logged).
//!
//! What it reaches: a native id (`--id`), a Qredo-style tag publisher (`--tag` or
//! `--tag-file`, with `--app-id`; for an authenticated tag `<prefix>@<key>` a random
//! `Tag-Challenge` is sent and the publisher's answer is checked against the key in the
//! tag before any byte is passed on), or a Hive device's streaming fallback
//! (`--hive WS/DEVICE`, no proof: the relay checked the device's when it parked).
//!
//! Exit codes ([`exit`]): 3 nobody parked (`not_parked`), 4 other refusals, 5 relay
//! unreachable, 6 a tag publisher's challenge answer missing or wrong; the message
//! carries the relay's error code.

use super::{exit, exit_code};
use crate::duration::HumanDuration;
use clap::Args;
use std::net::SocketAddr;
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::sync::Arc;
use tokio::io::AsyncWriteExt as _;
use tryst_client::conn::{self, RelayAddr, RelayStream, Timeouts};
use tryst_client::hive::HiveTarget;
use tryst_client::pump::{self, Counters};
use tryst_client::spare::{SpareConfig, Spares};
use tryst_client::tag::HashedTag;
use tryst_client::tls::Pin;
use tryst_engine::target::RendezvousId;

/// Arguments of `tryst connect`.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// The relay, HOST:PORT.
    #[arg(long, env = "TRYST_RELAY", value_name = "HOST:PORT")]
    pub relay: String,
    /// The rendezvous id of the hidden server (native family).
    #[arg(long, value_name = "UUID", required_unless_present_any = ["tag", "tag_file", "hive"],
          conflicts_with_all = ["tag", "tag_file", "hive"])]
    pub id: Option<String>,
    /// Reach a tag publisher: the tag's text (visible to other local users in the
    /// process list; prefer --tag-file).
    #[arg(long, value_name = "TAG", conflicts_with_all = ["tag_file", "hive"])]
    pub tag: Option<String>,
    /// Reach a tag publisher: a file holding the tag (trailing newline ignored).
    #[arg(long, value_name = "FILE", conflicts_with = "hive")]
    pub tag_file: Option<std::path::PathBuf>,
    /// tag family: the Qredo appId prefixed to the tag before hashing [default: empty].
    #[arg(long, value_name = "ID")]
    pub app_id: Option<String>,
    /// Reach a Hive device's streaming fallback: `<workspace-uuid>/<device-uuid>`.
    #[arg(long, value_name = "WS/DEVICE")]
    pub hive: Option<String>,
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
    /// Hand the relay connection itself to the process on stdout and exit, once the reach
    /// is answered (ssh's `ProxyUseFdpass=yes`): ssh then talks to the relay directly and
    /// no `tryst connect` stays between them. stdout must be a unix socket.
    #[arg(long, conflicts_with_all = ["listen", "tls"])]
    pub fdpass: bool,
    /// With --listen: relay connections kept open (and TLS-handshaken) ahead of need, so
    /// a local client's reach pays no handshake to the relay; 0 turns them off
    /// [default: 2].
    #[arg(long, value_name = "N", requires = "listen", value_parser = parse_spares)]
    pub spares: Option<usize>,
    /// With --listen: a spare is used at most this long after it was opened, then
    /// replaced; keep it below the relay's --head-timeout (10s by default) [default: 5s].
    #[arg(long, value_name = "DURATION", requires = "listen")]
    pub spare_max_age: Option<HumanDuration>,
    /// With --listen: spares are closed after this long without a local connection,
    /// and opened again by the next one [default: 60s].
    #[arg(long, value_name = "DURATION", requires = "listen")]
    pub spare_idle: Option<HumanDuration>,
}

/// Most `--spares`.
pub const MAX_SPARES: usize = 64;

fn parse_spares(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n <= MAX_SPARES => Ok(n),
        _ => Err(format!("expected 0 to {MAX_SPARES}")),
    }
}

/// The spare pool's settings from the flags (defaults: [`SpareConfig::default`]).
fn spare_config(args: &ConnectArgs) -> Result<SpareConfig, String> {
    let defaults = SpareConfig::default();
    let config = SpareConfig {
        count: args.spares.unwrap_or(defaults.count),
        max_age: args.spare_max_age.map_or(defaults.max_age, |d| d.0),
        idle: args.spare_idle.map_or(defaults.idle, |d| d.0),
        connect_timeout: Timeouts::default().connect,
    };
    if config.max_age.is_zero() || config.idle.is_zero() {
        return Err("--spare-max-age and --spare-idle must be positive".into());
    }
    Ok(config)
}

/// What a reach asks the relay for.
#[derive(Debug, Clone)]
enum Target {
    /// `CONNECT uuid:<id>`.
    Native(RendezvousId),
    /// `CONNECT tag:<hashed>`; with the tag's identity key, a challenge is sent and the
    /// answer checked.
    Tag {
        tag: HashedTag,
        identity: Option<ed25519_dalek::VerifyingKey>,
    },
    /// `CONNECT hive:<ws>/<device>`.
    Hive(HiveTarget),
}

fn target(args: &ConnectArgs) -> Result<Target, String> {
    if let Some(text) = &args.hive {
        let t =
            crate::hive::connect::parse_target(&format!("{}{text}", tryst_client::hive::SCHEME))
                .map_err(|_| format!("--hive: `{text}` is not <workspace-uuid>/<device-uuid>"))?;
        return Ok(Target::Hive(t));
    }
    let tag = match (&args.tag, &args.tag_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("--tag-file {}: {e}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ),
        (None, None) => None,
    };
    if let Some(tag) = tag {
        if tag.is_empty() {
            return Err("the tag is empty".into());
        }
        return Ok(Target::Tag {
            identity: crate::tag::wire::tag_identity_key(&tag),
            tag: tryst_client::tag::hashed_tag(args.app_id.as_deref().unwrap_or_default(), &tag),
        });
    }
    if args.app_id.is_some() {
        return Err("--app-id needs --tag or --tag-file".into());
    }
    let text = args.id.as_deref().unwrap_or_default();
    RendezvousId::parse(text)
        .map(Target::Native)
        .map_err(|_| format!("--id: `{text}` is not a hyphenated UUID"))
}

/// Why a reach failed.
#[derive(Debug, thiserror::Error)]
enum ReachError {
    /// The relay refused or could not be reached.
    #[error(transparent)]
    Relay(tryst_client::Error),
    /// A tag publisher did not answer the challenge with the tag's identity key.
    #[error("{0}")]
    Answer(String),
    /// An exact reach (`--fdpass`) on a connection that is not plain TCP.
    #[error("--fdpass needs a plain TCP connection to the relay")]
    NotTcp,
}

/// A connection to the relay: a spare if one is ready (`true`), else a new one.
async fn relay_stream(
    relay: &RelayAddr,
    spares: Option<&Spares>,
    timeouts: &Timeouts,
) -> Result<(RelayStream, bool), tryst_client::Error> {
    match spares.and_then(Spares::take) {
        Some(stream) => Ok((stream, true)),
        None => Ok((conn::open(relay, timeouts.connect).await?, false)),
    }
}

/// How a reach reads the relay's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// In chunks: bytes that follow the answer are returned as early bytes.
    Chunks,
    /// Never past the answer (and a tag publisher's challenge answer), so the early
    /// bytes are empty and the socket can be handed on whole; plain TCP only.
    Exact,
}

/// One reach of `target` (on a spare connection when `spares` has one ready): the
/// tunnel, the hidden server's first bytes (after a tag publisher's checked answer) and
/// whether a spare carried it.
async fn reach(
    relay: &RelayAddr,
    target: &Target,
    spares: Option<&Spares>,
    read: Read,
) -> Result<(RelayStream, Vec<u8>, bool), ReachError> {
    let timeouts = Timeouts::default();
    let (head, challenge) = match target {
        Target::Native(id) => (tryst_client::heads::reach_head(id), None),
        Target::Hive(t) => (tryst_client::hive::reach_head(t), None),
        Target::Tag { tag, identity } => {
            let challenge: Option<[u8; 32]> = identity.map(|_| rand::random());
            (
                tryst_client::tag::reach_head(tag, challenge.as_ref().map(<[u8; 32]>::as_slice)),
                challenge,
            )
        }
    };
    let (mut stream, spare) = relay_stream(relay, spares, &timeouts)
        .await
        .map_err(ReachError::Relay)?;
    let mut early = match (read, &mut stream) {
        (Read::Chunks, stream) => conn::exchange(stream, head.as_bytes(), timeouts.answer)
            .await
            .map_err(ReachError::Relay)?,
        (Read::Exact, RelayStream::Tcp(tcp)) => {
            conn::exchange_exact(tcp, head.as_bytes(), timeouts.answer)
                .await
                .map_err(ReachError::Relay)?;
            Vec::new()
        }
        (Read::Exact, RelayStream::Tls(_)) => return Err(ReachError::NotTcp),
    };
    if let (
        Target::Tag {
            tag,
            identity: Some(key),
        },
        Some(challenge),
    ) = (target, challenge)
    {
        use tokio::io::AsyncReadExt as _;
        let want = tryst_client::tag::ANSWER_LEN;
        // Exactly the answer's missing bytes: nothing after it is read here.
        let have = early.len();
        early.resize(have.max(want), 0);
        let read = stream.read_exact(&mut early[have.min(want)..want]);
        match tokio::time::timeout(timeouts.answer, read).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(ReachError::Answer(format!(
                    "the tag publisher closed before answering the challenge: {e}"
                )));
            }
            Err(_) => {
                return Err(ReachError::Answer(
                    "the tag publisher did not answer the challenge in time".into(),
                ));
            }
        }
        let rest = early.split_off(want);
        if !crate::tag::wire::verify_answer(key, tag, &challenge, &early) {
            return Err(ReachError::Answer(
                "the tag publisher's challenge answer is not signed by the key in the tag".into(),
            ));
        }
        early = rest;
    }
    Ok((stream, early, spare))
}

/// Runs `tryst connect`; returns the process exit code.
pub fn main(args: &ConnectArgs) -> i32 {
    let target = match target(args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tryst connect: {e}");
            return exit::FAILURE;
        }
    };
    let relay = match args.pin {
        Some(pin) => RelayAddr::tls(args.relay.clone(), pin),
        None => RelayAddr::plain(args.relay.clone()),
    };
    let spare_config = match spare_config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tryst connect: {e}");
            return exit::FAILURE;
        }
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
            // On a worker like the tunnels: an accept then needs no wake-up of the
            // thread blocked here and no hand-off of the new tunnel to a worker.
            Some(addr) => tokio::spawn(listen(addr, relay, target, spare_config))
                .await
                .unwrap_or(exit::FAILURE),
            None if args.fdpass => fdpass(relay, target).await,
            None => stdio(relay, target).await,
        }
    });
    // Leaves at once even if the stdin reader thread is still blocked in read(2).
    std::process::exit(code)
}

fn report(e: &ReachError, relay: &RelayAddr) -> i32 {
    let e = match e {
        ReachError::Relay(e) => e,
        ReachError::Answer(why) => {
            eprintln!("tryst connect: {why}");
            return exit::BAD_ANSWER;
        }
        ReachError::NotTcp => {
            eprintln!("tryst connect: {e}");
            return exit::FAILURE;
        }
    };
    let code = exit_code(e);
    match e.refusal() {
        Some(r) => eprintln!(
            "tryst connect: {} refused the reach: {} (relay error code: {})",
            relay.addr,
            r,
            r.code_or_none()
        ),
        None => eprintln!("tryst connect: {e}"),
    }
    code
}

async fn stdio(relay: RelayAddr, target: Target) -> i32 {
    let (stream, early, _) = match reach(&relay, &target, None, Read::Chunks).await {
        Ok(ok) => ok,
        Err(e) => return report(&e, &relay),
    };
    let counters = Counters::default();
    if let RelayStream::Tcp(tcp) = &stream {
        match pump::stdio_pipes() {
            Ok(Some((input, output))) => {
                return stdio_spliced(tcp, &early, input, output, &counters).await;
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("tryst connect: stdin/stdout: {e}");
                return exit::FAILURE;
            }
        }
    }
    let (mut from_relay, mut to_relay) = tokio::io::split(stream);
    let mut stdout = tokio::io::stdout();
    if stdout.write_all(&early).await.is_err() || stdout.flush().await.is_err() {
        return exit::FAILURE;
    }
    let mut stdin = tokio::io::stdin();
    let up = pump::copy_direction(&mut stdin, &mut to_relay, &counters.a_to_b);
    let down = pump::copy_direction(&mut from_relay, &mut stdout, &counters.b_to_a);
    stdio_done(up, down).await
}

/// `--fdpass`: checks that stdout is a unix socket, reaches reading exactly the answer,
/// then sends the relay socket over stdout (`SCM_RIGHTS`, with the one data byte ssh's
/// receiver expects) and returns; the caller exits, so only the receiver holds it.
async fn fdpass(relay: RelayAddr, target: Target) -> i32 {
    // Before the reach: a reach takes a parked connection, which a failure here would
    // waste.
    let stdout = std::io::stdout();
    if let Err(why) = unix_socket(stdout.as_fd()) {
        eprintln!(
            "tryst connect: --fdpass: stdout {why}; it is for ssh -o ProxyUseFdpass=yes \
             -o ProxyCommand='tryst connect --fdpass ...'"
        );
        return exit::FAILURE;
    }
    let (stream, early, _) = match reach(&relay, &target, None, Read::Exact).await {
        Ok(ok) => ok,
        Err(e) => return report(&e, &relay),
    };
    debug_assert!(
        early.is_empty(),
        "an exact reach reads nothing past the answer"
    );
    let RelayStream::Tcp(tcp) = stream else {
        return report(&ReachError::NotTcp, &relay);
    };
    let sent = tcp.into_std().and_then(|socket| {
        // The receiver gets a blocking socket, as from a plain connect(2).
        socket.set_nonblocking(false)?;
        send_fd(stdout.as_fd(), socket.as_fd())
    });
    match sent {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tryst connect: --fdpass: passing the connection on stdout: {e}");
            exit::FAILURE
        }
    }
}

/// `Ok` when `fd` is a unix-domain socket, else what it is instead.
fn unix_socket(fd: std::os::fd::BorrowedFd<'_>) -> Result<(), &'static str> {
    use nix::sys::socket::{AddressFamily, SockaddrLike as _, SockaddrStorage, getsockname};
    match getsockname::<SockaddrStorage>(fd.as_raw_fd()) {
        Ok(addr) if addr.family() == Some(AddressFamily::Unix) => Ok(()),
        Ok(_) => Err("is a socket but not a unix-domain one"),
        Err(nix::errno::Errno::ENOTSOCK) => Err("is not a socket"),
        Err(_) => Err("cannot be inspected"),
    }
}

/// Sends `fd` over the unix socket `over` with one data byte (`SCM_RIGHTS`).
fn send_fd(
    over: std::os::fd::BorrowedFd<'_>,
    fd: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let fds = [fd.as_raw_fd()];
    let sent = sendmsg::<()>(
        over.as_raw_fd(),
        &[std::io::IoSlice::new(&[0])],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    if sent == 1 {
        Ok(())
    } else {
        Err(std::io::ErrorKind::WriteZero.into())
    }
}

/// The exit code of a stdin/stdout tunnel: done when the hidden server's side (`down`)
/// ends; stdin reaching EOF (`up`) only half-closes.
async fn stdio_done(
    up: impl Future<Output = std::io::Result<u64>>,
    down: impl Future<Output = std::io::Result<u64>>,
) -> i32 {
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

/// [`stdio`] when stdin and stdout are pipes (as ssh runs a `ProxyCommand`) and the relay
/// connection is plain TCP: each direction is one `splice(2)` between a pipe and the
/// socket, so no byte is copied through this process.
async fn stdio_spliced(
    relay: &tokio::net::TcpStream,
    early: &[u8],
    input: tokio::net::unix::pipe::Receiver,
    mut output: tokio::net::unix::pipe::Sender,
    counters: &Counters,
) -> i32 {
    if output.write_all(early).await.is_err() {
        return exit::FAILURE;
    }
    let up = pump::splice_from_pipe(&input, relay, &counters.a_to_b);
    let down = pump::splice_to_pipe(relay, &output, &counters.b_to_a);
    stdio_done(up, down).await
}

async fn listen(addr: SocketAddr, relay: RelayAddr, target: Target, spares: SpareConfig) -> i32 {
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
    // Started once listening, so the first client finds them.
    let spares = Arc::new((spares.count > 0).then(|| Spares::start(relay.clone(), spares)));
    let (relay, target) = (Arc::new(relay), Arc::new(target));
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
        let (relay, target, spares) = (relay.clone(), target.clone(), spares.clone());
        tokio::spawn(async move {
            let _ = local.set_nodelay(true);
            let spares = spares.as_ref().as_ref();
            if let (Target::Native(id), None) = (&*target, relay.tls) {
                return pipelined(&local, peer, &relay, id, spares).await;
            }
            let (stream, early, spare) = match reach(&relay, &target, spares, Read::Chunks).await {
                Ok(ok) => ok,
                Err(ReachError::Relay(e)) => {
                    let code = e.refusal().map_or("", |r| r.code.as_str());
                    tracing::warn!(%peer, code, "reach failed: {e}");
                    return;
                }
                Err(other) => {
                    tracing::warn!(%peer, "reach failed: {other}");
                    return;
                }
            };
            tracing::info!(%peer, spare, "tunnel open");
            if local.write_all(&early).await.is_err() {
                return;
            }
            let counters = Counters::default();
            let moved = match stream {
                RelayStream::Tcp(relay) => pump::splice_join(&local, &relay, &counters).await,
                tls => pump::copy_join(local, tls, &counters).await,
            };
            match moved {
                Ok((up, down)) => tracing::info!(%peer, up, down, spare, "tunnel closed"),
                Err(e) => tracing::info!(%peer, "tunnel ended with an error: {e}"),
            }
        });
    }
}

/// Sends `head` on a spare (`true`) or a new connection without waiting for the answer.
async fn send_on(
    relay: &RelayAddr,
    spares: Option<&Spares>,
    head: &[u8],
    timeouts: &Timeouts,
) -> Result<(RelayStream, bool), tryst_client::Error> {
    let Some(mut stream) = spares.and_then(Spares::take) else {
        return Ok((conn::open_and_send(relay, head, timeouts).await?, false));
    };
    conn::send(&mut stream, head, timeouts.answer).await?;
    Ok((stream, true))
}

/// Most bytes a local client already sent that go out in the same write as the reach
/// head.
const WITH_HEAD: usize = 16 * 1024;

/// A native reach over plain TCP for one local connection, pipelined: the head goes out
/// together with whatever the client already sent, and the client's further bytes follow
/// at once, without waiting for the relay's 200 (the relay delivers bytes sent after a
/// reach head in order once paired; docs/protocol.md). The client's first bytes thus
/// reach the hidden server one relay round trip sooner, and the relay usually reads the
/// head and those bytes in one go. A refusal closes the local connection without a byte
/// from the relay, as the non-pipelined path does.
async fn pipelined(
    local: &tokio::net::TcpStream,
    peer: SocketAddr,
    relay: &RelayAddr,
    id: &RendezvousId,
    spares: Option<&Spares>,
) {
    let timeouts = Timeouts::default();
    let mut head = tryst_client::heads::reach_head(id).into_bytes();
    let head_len = head.len();
    head.reserve(WITH_HEAD);
    // Nothing waiting (WouldBlock) or an error the splice will meet again: head alone.
    let _ = local.try_read_buf(&mut head);
    let with_head = (head.len() - head_len) as u64;
    let counters = Counters::default();
    counters
        .a_to_b
        .fetch_add(with_head, std::sync::atomic::Ordering::Relaxed);
    let mut spare = false;
    let joined = match send_on(relay, spares, &head, &timeouts).await {
        Ok((RelayStream::Tcp(mut stream), used)) => {
            spare = used;
            pump::splice_reach(local, &mut stream, timeouts.answer, &counters).await
        }
        Ok((RelayStream::Tls(_), _)) => {
            // Not reached: the caller checked the address has no pin, so it opens TCP.
            tracing::warn!(%peer, "reach failed: a pipelined reach needs plain TCP");
            return;
        }
        Err(e) => Err(e),
    };
    match joined {
        Ok(Ok((up, down))) => {
            tracing::info!(%peer, up = up + with_head, down, spare, "tunnel closed");
        }
        Ok(Err(e)) => tracing::info!(%peer, "tunnel ended with an error: {e}"),
        Err(e) => {
            let code = e.refusal().map_or("", |r| r.code.as_str());
            tracing::warn!(%peer, code, "reach failed: {e}");
        }
    }
}
