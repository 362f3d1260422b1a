//! `tryst serve`: the supervisor process and the worker entry point.
//!
//! The supervisor raises `RLIMIT_NOFILE`, creates the data directory, binds the
//! listener, validates the secrets file, prints where it listens, starts the engine's
//! workers and then runs a small tokio loop: handed-off HTTP connections, `/metrics`
//! requests, SIGHUP (reload secrets), SIGTERM/SIGINT (drain and exit) and a 200 ms
//! worker check. Workers run no tokio runtime: they build the combined router (native
//! protocol plus node-rendezvous, [`tryst_engine::node::CompatRouter`]) and hand control
//! to the engine.

use crate::config::ServeConfig;
use crate::http::{HttpLimits, HttpService, StatsRequest, StatsRequester};
use crate::secrets::{self, FileSecrets, SecretsError};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::Interest;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tryst_engine::driver::{Engine, Listener, run_worker};
use tryst_engine::node::{CompatRouter, CompatRouterConfig};

use crate::hive::connect::HiveConnect;
use crate::router::RelayRouter;
use tryst_engine::route::{NativeRouterConfig, Transport};

/// Listen backlog (std's `TcpListener::bind` uses 128).
pub const LISTEN_BACKLOG: i32 = 4096;
/// How often the supervisor reaps and restarts workers.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Why `tryst serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The secrets file is unusable.
    #[error("secrets: {0}")]
    Secrets(#[from] SecretsError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The dead-drop could not start (its key or its store).
    #[error("dead-drop: {0}")]
    DeadDrop(#[from] crate::deaddrop::DeadDropError),
    /// Qredo's `/services` could not start (its apps file or its store).
    #[error("{0}")]
    Qredo(#[from] crate::qredo::QredoError),
    /// Another I/O failure, with what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What failed.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> ServeError {
    move |source| ServeError::Io { what, source }
}

/// Raises the `RLIMIT_NOFILE` soft limit to the hard limit; returns `(soft, hard)` now.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok((hard, hard))
}

/// Binds `addr` with `SO_REUSEADDR` and a [`LISTEN_BACKLOG`] backlog.
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// The two lines `tryst serve` prints first on stdout.
pub fn startup_lines(listening: SocketAddr, data_dir: &Path) -> String {
    format!(
        "tryst: listening on {listening}\ntryst: data directory {}\n",
        data_dir.display()
    )
}

/// Runs the supervisor until SIGTERM/SIGINT has drained every worker.
pub fn run_supervisor(config: ServeConfig) -> Result<(), ServeError> {
    match raise_nofile_limit() {
        Ok((soft, hard)) => tracing::debug!(soft, hard, "RLIMIT_NOFILE"),
        Err(e) => tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE"),
    }
    secrets::create_private_dir(&config.data_dir).map_err(|e| match e {
        SecretsError::Io { path, source } => ServeError::DataDir { path, source },
        other => ServeError::Secrets(other),
    })?;
    let secrets = FileSecrets::load(&config.secrets_path)?;
    if secrets.is_empty() {
        tracing::info!(
            path = %config.secrets_path.display(),
            "no rendezvous ids provisioned yet; add one with `tryst provision <UUID>`"
        );
    } else {
        tracing::info!(
            ids = secrets.len(),
            totp_ids = secrets.totp_len(),
            path = %config.secrets_path.display(),
            "secrets loaded"
        );
    }
    drop(secrets);
    let (deaddrop, generated) = crate::deaddrop::DeadDrop::open(config.deaddrop.clone())?;
    if generated {
        tracing::info!(path = %config.deaddrop.key_path.display(), "dead-drop key generated");
    }
    let qredo = crate::qredo::Qredo::open(config.qredo.clone())?;

    // Signal handlers go in before the startup lines: whoever reads them may signal at
    // once, and SIGHUP's or SIGTERM's default action would kill the supervisor.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tryst-http")
        .enable_all()
        .build()
        .map_err(io_err("starting the tokio runtime"))?;
    let signals = {
        let _entered = runtime.enter();
        Signals::install()?
    };

    let listener = bind_listener(config.listen).map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    let local = listener
        .local_addr()
        .map_err(io_err("reading the bound address"))?;
    let mut listeners = vec![Listener {
        socket: listener,
        transport: Transport::Plain,
    }];
    let mut tls_lines = String::new();
    if let Some(tls) = &config.tls {
        let loaded = crate::tls::load(tls, &config.data_dir, true)?;
        let socket = bind_listener(tls.listen).map_err(|source| ServeError::Bind {
            addr: tls.listen,
            source,
        })?;
        let tls_local = socket
            .local_addr()
            .map_err(io_err("reading the bound address"))?;
        tls_lines = format!(
            "tryst: tls listening on {tls_local}\ntryst: tls certificate {} sha256 {}{}\n",
            loaded.cert_path.display(),
            loaded.fingerprint,
            if loaded.generated {
                " (generated now)"
            } else {
                ""
            }
        );
        listeners.push(Listener {
            socket,
            transport: Transport::Tls,
        });
    }
    let mut stun = None;
    if let Some(addr) = config.stun_listen {
        let socket = std::net::UdpSocket::bind(addr)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|source| ServeError::Bind { addr, source })?;
        let stun_local = socket
            .local_addr()
            .map_err(io_err("reading the bound address"))?;
        tls_lines.push_str(&format!("tryst: stun listening on {stun_local}\n"));
        stun = Some(socket);
    }
    {
        let mut out = io::stdout().lock();
        out.write_all(startup_lines(local, &config.data_dir).as_bytes())
            .and_then(|()| out.write_all(tls_lines.as_bytes()))
            .and_then(|()| out.flush())
            .map_err(io_err("writing to stdout"))?;
    }
    let e = &config.engine;
    tracing::info!(
        %local,
        pid = std::process::id(),
        workers = e.workers,
        sockets_per_worker = e.max_sockets_per_worker,
        data_path = ?e.data_path,
        "starting"
    );

    let worker_args = std::env::args_os().skip(1).collect();
    let engine = Engine::start(&config.engine, listeners, worker_args)
        .map_err(io_err("starting the workers"))?;
    runtime.block_on(supervise(engine, &config, signals, deaddrop, qredo, stun))
}

/// The signals the supervisor acts on.
struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    /// Installs the handlers; needs a tokio runtime context.
    fn install() -> Result<Self, ServeError> {
        Ok(Self {
            hangup: signal(SignalKind::hangup())
                .map_err(io_err("installing the SIGHUP handler"))?,
            terminate: signal(SignalKind::terminate())
                .map_err(io_err("installing the SIGTERM handler"))?,
            interrupt: signal(SignalKind::interrupt())
                .map_err(io_err("installing the SIGINT handler"))?,
        })
    }
}

/// A duplicate of the HTTP inbox's fd, registered with tokio only to learn when the
/// inbox is readable (receiving goes through [`tryst_engine::driver::HttpInbox`]).
fn inbox_readiness(engine: &Engine) -> io::Result<tokio::net::UnixDatagram> {
    let fd = engine.http_inbox().as_fd().try_clone_to_owned()?;
    tokio::net::UnixDatagram::from_std(std::os::unix::net::UnixDatagram::from(fd))
}

async fn supervise(
    mut engine: Engine,
    config: &ServeConfig,
    signals: Signals,
    deaddrop: crate::deaddrop::DeadDrop,
    qredo: crate::qredo::Qredo,
    stun: Option<std::net::UdpSocket>,
) -> Result<(), ServeError> {
    let (stats, mut stats_requests) = StatsRequester::channel(64);
    let hive = crate::hive::Hive::new(config.hive.clone());
    hive.start_background();
    let http = HttpService::with_hive(
        HttpLimits {
            max_connections: config.max_http_connections,
            header_timeout: config.engine.head_timeout,
            max_headers: config.engine.head_max_headers,
        },
        stats,
        config.pico,
        deaddrop,
        hive,
    );
    http.set_qredo(qredo);
    if let Some(socket) = stun {
        let socket = tokio::net::UdpSocket::from_std(socket)
            .map_err(io_err("registering the STUN socket"))?;
        let counters = crate::stun::StunCounters::shared();
        http.set_stun_counters(counters.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::stun::server::run(socket, counters).await {
                tracing::error!(error = %e, "stun: responder stopped");
            }
        });
    }
    let inbox = inbox_readiness(&engine).map_err(io_err("registering the HTTP inbox"))?;
    let Signals {
        mut hangup,
        mut terminate,
        mut interrupt,
    } = signals;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutting_down = false;

    loop {
        tokio::select! {
            ready = inbox.readable() => {
                ready.map_err(io_err("waiting on the HTTP inbox"))?;
                // `try_io` clears tokio's readiness when the drain ends in WouldBlock.
                let _ = inbox.try_io(Interest::READABLE, || drain_inbox(&engine, &http));
            }
            Some(reply) = stats_requests.recv() => answer_stats(&engine, reply),
            _ = hangup.recv() => reload(&engine, config),
            _ = terminate.recv() => begin_shutdown(&mut engine, &http, &mut shutting_down, "SIGTERM"),
            _ = interrupt.recv() => begin_shutdown(&mut engine, &http, &mut shutting_down, "SIGINT"),
            _ = tick.tick() => {
                match engine.poll_workers() {
                    Ok(true) if shutting_down => break,
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "checking workers"),
                }
            }
        }
    }
    drop(inbox);
    tracing::info!("all workers exited");
    Ok(())
}

/// Serves every queued hand-off. Ends with `WouldBlock` once the inbox is empty, or
/// with the receive error.
fn drain_inbox(engine: &Engine, http: &HttpService) -> io::Result<()> {
    loop {
        match engine.http_inbox().try_recv() {
            Ok(Some(conn)) => {
                if let Err(e) = http.accept(conn) {
                    tracing::warn!(error = %e, "cannot serve a handed-off connection");
                }
            }
            Ok(None) => return Err(io::ErrorKind::WouldBlock.into()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "receiving from the HTTP inbox");
                return Err(e);
            }
        }
    }
}

fn answer_stats(engine: &Engine, reply: StatsRequest) {
    let _ = reply.send(engine.stats());
}

/// SIGHUP: validate the secrets file (and the TLS certificate, if any) here first, then
/// ask every worker to re-read them. A file that does not validate changes nothing.
fn reload(engine: &Engine, config: &ServeConfig) {
    let secrets = match FileSecrets::load(&config.secrets_path) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: secrets file invalid; keeping the old secrets and certificate");
            return;
        }
    };
    if let Some(tls) = &config.tls {
        match crate::tls::load(tls, &config.data_dir, false) {
            Ok(loaded) => {
                tracing::info!(fingerprint = %loaded.fingerprint, "SIGHUP: TLS certificate valid")
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: TLS certificate invalid; keeping the old secrets and certificate");
                return;
            }
        }
    }
    tracing::info!(
        ids = secrets.len(),
        "SIGHUP: secrets file valid; reloading workers"
    );
    if let Err(e) = engine.reload() {
        tracing::error!(error = %e, "asking workers to reload");
    }
}

fn begin_shutdown(engine: &mut Engine, http: &HttpService, shutting_down: &mut bool, why: &str) {
    if *shutting_down {
        tracing::info!("{why}: already draining");
        return;
    }
    tracing::info!("{why}: stopping; draining tunnels");
    *shutting_down = true;
    http.begin_shutdown();
    if let Err(e) = engine.begin_shutdown() {
        tracing::error!(error = %e, "beginning shutdown");
    }
}

/// The worker process: loads the secrets, builds the combined router (native and
/// node-rendezvous with `--totp-skew-steps` and `--node-park-mode`, whose defaults are
/// upstream's: current TOTP step only, a newer park replaces the older) and runs the
/// engine's event loop until shutdown.
pub fn run_worker_process(config: &ServeConfig) -> Result<(), ServeError> {
    let secrets = FileSecrets::load(&config.secrets_path)?;
    let router = RelayRouter::new(CompatRouter::new(
        secrets,
        CompatRouterConfig {
            native: NativeRouterConfig {
                proof_window_secs: config.proof_window_secs,
                ..NativeRouterConfig::default()
            },
            totp_skew_steps: config.totp_skew_steps,
            node_park_mode: config.node_park_mode,
        },
    ))
    .with_family(Box::new(HiveConnect::with_policy(config.hive.policy)))
    .with_family(Box::new(crate::tag::TagFamily::new(config.tag)));
    let tls = config.tls.clone().map(|tls| {
        let data_dir = config.data_dir.clone();
        Box::new(move || {
            crate::tls::load(&tls, &data_dir, false)
                .map(|loaded| loaded.config)
                .map_err(|e| e.to_string())
        }) as tryst_engine::driver::TlsSource
    });
    run_worker(&config.engine, router, tls).map_err(io_err("worker"))
}

/// `tryst serve --check-config`: given the configuration [`ServeConfig::load`] accepted,
/// checks what `serve` would check next (the data directory is a directory or can be
/// created, the secrets file parses) without creating, binding or starting anything, and
/// returns the summary to print.
pub fn check_config(config: &ServeConfig) -> Result<String, ServeError> {
    let data_dir = match std::fs::metadata(&config.data_dir) {
        Ok(meta) if meta.is_dir() => DataDirState::Exists,
        Ok(_) => {
            return Err(ServeError::DataDir {
                path: config.data_dir.clone(),
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => DataDirState::WillBeCreated,
        Err(source) => {
            return Err(ServeError::DataDir {
                path: config.data_dir.clone(),
                source,
            });
        }
    };
    let secrets = FileSecrets::load(&config.secrets_path)?;
    // The operator's certificate and key must load; a generated pair is made at start.
    if let Some(tls) = config.tls.as_ref().filter(|t| t.cert_and_key.is_some()) {
        crate::tls::load(tls, &config.data_dir, false)?;
    }
    Ok(config_summary(config, data_dir, secrets.len()))
}

/// Whether the data directory is already there (for [`config_summary`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirState {
    /// It exists and is a directory.
    Exists,
    /// It does not exist; `serve` creates it (mode 0700) at start.
    WillBeCreated,
}

/// The short summary `--check-config` prints on success.
pub fn config_summary(config: &ServeConfig, data_dir: DataDirState, secrets: usize) -> String {
    let e = &config.engine;
    let dir_note = match data_dir {
        DataDirState::Exists => "exists",
        DataDirState::WillBeCreated => "will be created",
    };
    let data_path = match e.data_path {
        tryst_engine::driver::DataPath::SpliceSyscall => "splice-syscall",
        tryst_engine::driver::DataPath::SpliceUring => "splice-uring",
    };
    let tls = match &config.tls {
        None => String::new(),
        Some(t) => format!(
            "tls listen      {} ({})\n",
            t.listen,
            match &t.cert_and_key {
                Some((cert, _)) => cert.display().to_string(),
                None => format!("self-signed for {}", t.name),
            }
        ),
    };
    let stun = config
        .stun_listen
        .map(|addr| format!("stun listen     {addr}\n"))
        .unwrap_or_default();
    let mirrors = if config.hive.mirrors.is_empty() {
        String::new()
    } else {
        let peers: Vec<String> = config
            .hive
            .mirrors
            .iter()
            .map(ToString::to_string)
            .collect();
        format!("hive mirrors    {}\n", peers.join(", "))
    };
    format!(
        "tryst: configuration ok\n\
         listen          {}\n\
         {tls}\
         {stun}\
         data directory  {} ({dir_note})\n\
         secrets         {} ({secrets} {})\n\
         workers         {} ({} sockets each)\n\
         data path       {data_path}\n",
        config.listen,
        config.data_dir.display(),
        config.secrets_path.display(),
        if secrets == 1 { "id" } else { "ids" },
        e.workers,
        e.max_sockets_per_worker,
    ) + &mirrors
}

/// Runs `tryst provision` (a native secret, a TOTP record, an import or an export; see
/// [`secrets::provision`] and [`crate::nodeprov`]) and returns what to print.
pub fn run_provision(
    secrets_path: &Path,
    args: &crate::cli::ProvisionArgs,
) -> anyhow::Result<String> {
    use crate::nodeprov;
    use anyhow::Context as _;
    if args.export {
        return Ok(nodeprov::export(secrets_path)?);
    }
    if let Some(file) = &args.import {
        let text = if file.as_os_str() == "-" {
            io::read_to_string(io::stdin()).context("reading records from stdin")?
        } else {
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
        };
        let ids = nodeprov::import(secrets_path, &text, args.force)
            .with_context(|| format!("importing {}", file.display()))?;
        return Ok(format!(
            "Imported {} node-rendezvous record(s) into {}\nA running relay loads them on SIGHUP (kill -HUP <pid of tryst serve>).\n",
            ids.len(),
            secrets_path.display()
        ));
    }
    let id = args.id.as_deref().unwrap_or_default();
    let mut rng = rand::rngs::OsRng;
    if args.totp {
        let parking = match args.parking.as_deref() {
            None => None,
            Some(p) => Some(tryst_engine::totp::TotpParking::parse(p)?),
        };
        let options = nodeprov::TotpOptions {
            step: args.step,
            parking,
            issuer: args.issuer.clone(),
        };
        let p = nodeprov::provision_totp(secrets_path, id, args.force, &options, &mut rng)?;
        return Ok(nodeprov::totp_instructions(&p));
    }
    let p = secrets::provision(secrets_path, id, args.force, &mut rng)?;
    Ok(secrets::provision_instructions(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_lines_are_the_agreed_ones() {
        assert_eq!(
            startup_lines(
                "127.0.0.1:7400".parse().unwrap(),
                Path::new("/var/lib/tryst")
            ),
            "tryst: listening on 127.0.0.1:7400\ntryst: data directory /var/lib/tryst\n"
        );
    }

    #[test]
    fn config_summary_names_what_serve_would_use() {
        let settings = crate::cli::Settings {
            listen: Some("127.0.0.1:9000".parse().unwrap()),
            data_dir: Some("/var/lib/tryst".into()),
            workers: "3".parse().ok(),
            ..crate::cli::Settings::default()
        };
        let host = crate::config::HostLimits {
            nofile_hard: 20_000,
            cores: 2,
        };
        let config =
            ServeConfig::resolve(settings, &|_: &str| None, Ok(Path::new("/")), host).unwrap();
        assert_eq!(
            config_summary(&config, DataDirState::WillBeCreated, 1),
            "tryst: configuration ok\n\
             listen          127.0.0.1:9000\n\
             data directory  /var/lib/tryst (will be created)\n\
             secrets         /var/lib/tryst/secrets.toml (1 id)\n\
             workers         3 (19680 sockets each)\n\
             data path       splice-syscall\n"
        );
        let mut config = config;
        config.hive.mirrors = vec![
            crate::hive::mirror::MirrorPeer::parse("http://10.0.0.2:7400").unwrap(),
            crate::hive::mirror::MirrorPeer::parse("http://[::1]:7401").unwrap(),
        ];
        assert!(
            config_summary(&config, DataDirState::Exists, 2)
                .ends_with("data path       splice-syscall\nhive mirrors    http://10.0.0.2:7400, http://[::1]:7401\n")
        );
        config.stun_listen = Some("0.0.0.0:3478".parse().unwrap());
        assert!(config_summary(&config, DataDirState::Exists, 2).contains(
            "listen          127.0.0.1:9000\nstun listen     0.0.0.0:3478\ndata directory"
        ));
    }

    #[test]
    fn listener_binds_port_zero_with_a_large_backlog() {
        let l = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let sock = socket2::SockRef::from(&l);
        assert!(sock.reuse_address().unwrap());
        // Loopback handshakes complete against the backlog before any accept: with
        // std's backlog of 128 the 130th SYN would be dropped and this connect time out.
        let somaxconn: i32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);
        let n = usize::try_from(somaxconn.min(LISTEN_BACKLOG).min(300)).unwrap_or(0);
        let clients: Vec<_> = (0..n)
            .map(|i| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("connection {i} of {n}: {e}"))
            })
            .collect();
        assert_eq!(clients.len(), n);
    }

    #[test]
    fn nofile_soft_limit_is_raised_to_hard() {
        let (soft, hard) = raise_nofile_limit().unwrap();
        assert_eq!(soft, hard);
        let (s, h) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((s, h), (hard, hard));
    }
}
