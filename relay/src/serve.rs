//! `tryst serve`: the supervisor process and the worker entry point.
//!
//! The supervisor raises `RLIMIT_NOFILE`, creates the data directory, binds the
//! listener, validates the secrets file, prints where it listens, starts the engine's
//! workers and then runs a small tokio loop: handed-off HTTP connections, `/metrics`
//! requests, SIGHUP (reload secrets), SIGTERM/SIGINT (drain and exit) and a 200 ms
//! worker check. Workers run no tokio runtime: they build the combined router (native
//! protocol plus node-rendezvous, [`tryst_engine::node::CompatRouter`]) and hand control
//! to the engine.

use crate::clock::unix_now;
use crate::config::ServeConfig;
use crate::families::{self, FamilyError};
use crate::http::{HttpLimits, HttpService, StatsRequest, StatsRequester};
use crate::secrets::{self, FileSecrets, SecretsError};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::Interest;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tryst_engine::driver::{Engine, Listener, ShareFile, WorkerShare, run_worker_with};
use tryst_engine::node::{CompatRouter, CompatRouterConfig};

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
    /// The data directory (or, when it does not exist yet, the directory it would be
    /// created in) is there but this user may not write into it.
    #[error("{}", not_writable(path, within.as_deref()))]
    DataDirNotWritable {
        /// The data directory.
        path: PathBuf,
        /// The existing directory it would be created in, when it does not exist yet.
        within: Option<PathBuf>,
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
    /// A family could not start (its files, its store or its socket).
    #[error(transparent)]
    Family(#[from] FamilyError),
    /// The cluster could not start (mesh key, mesh listener, directory client).
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
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

/// [`bind_listener`] at start-up: the listener and its real address (the port resolved
/// when `0` was asked for), or the error naming the address.
fn bind_start_up(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServeError> {
    let socket = bind_listener(addr).map_err(|source| ServeError::Bind { addr, source })?;
    let local = socket
        .local_addr()
        .map_err(io_err("reading the bound address"))?;
    Ok((socket, local))
}

/// Blocks until the wall clock has left unix second `second` (at most one second).
///
/// The supervisor does this before it binds: a relay started in second `S` refuses
/// every proof stamped at or before `S` (its replay caches are empty, and the relay it
/// replaces may have accepted those), so it serves only from `S + 1` on, when the proofs
/// its clients make are no longer refused.
fn wait_past_second(second: u64) {
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        if now.as_secs() > second {
            return;
        }
        std::thread::sleep(Duration::from_secs(second.saturating_add(1)).saturating_sub(now));
    }
}

/// The replay floor of a worker: the relay's (`relay_floor`, the supervisor's start
/// second; it serves from the next second on) for the first worker in its slot, so the
/// proofs clients make once the relay serves are accepted; its own start second `own`
/// for a worker that replaces one that died, which may have accepted proofs stamped up
/// to now. Without a relay floor (a worker started by hand) it is `own`.
pub fn worker_replay_floor(relay_floor: Option<u64>, replaces_another: bool, own: u64) -> u64 {
    match relay_floor {
        Some(floor) if !replaces_another => floor,
        _ => own,
    }
}

/// Whether this worker process replaces one that ran in its slot under the same
/// supervisor. Each worker records its supervisor's pid and the relay floor in a file
/// of the data directory named after its slot (the engine's `TRYST_WORKER` value); a
/// worker that finds its own record there is a replacement. When the file cannot be
/// written the worker counts as the first (the relay floor applies) and says so.
fn replaces_another_worker(data_dir: &Path, relay_floor: u64) -> bool {
    let slot: String = std::env::var("TRYST_WORKER")
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = data_dir.join("workers");
    let path = dir.join(format!("slot-{slot}"));
    let record = format!("{} {relay_floor}\n", std::os::unix::process::parent_id());
    if std::fs::read_to_string(&path).is_ok_and(|old| old == record) {
        return true;
    }
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, record)) {
        tracing::warn!(path = %path.display(), error = %e, "cannot record this worker's start; replay floor is the relay's");
    }
    false
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
    // Every replay cache starts empty: refuse proofs stamped up to this second, and
    // serve only from the next one (see `wait_past_second`).
    let started = unix_now();
    match raise_nofile_limit() {
        Ok((soft, hard)) => tracing::debug!(soft, hard, "RLIMIT_NOFILE"),
        Err(e) => tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE"),
    }
    // Checked first, so a file in its place or a directory this user cannot write is
    // named as such rather than by the error of the first attempt to use it.
    check_data_dir(&config.data_dir)?;
    secrets::create_private_dir(&config.data_dir).map_err(|e| match e {
        SecretsError::Io { path, source } => ServeError::DataDir { path, source },
        other => ServeError::Secrets(other),
    })?;
    // Parsed and validated once, here: each worker gets only the ids it owns from this
    // (`Engine::start_with_shares`), instead of every worker parsing the whole file.
    let secrets = secrets::load_file(&config.secrets_path)?;
    check_cluster(config.cluster.as_ref())?;
    if secrets.secrets.is_empty() && secrets.totp.is_empty() {
        tracing::info!(
            path = %config.secrets_path.display(),
            "no rendezvous ids provisioned yet; add one with `tryst provision <UUID>`"
        );
    } else {
        tracing::info!(
            ids = secrets.secrets.len(),
            totp_ids = secrets.totp.len(),
            path = %config.secrets_path.display(),
            "secrets loaded"
        );
    }
    let mut families = families::open(&config.families, started)?;

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

    wait_past_second(started);
    let (listener, local) = bind_start_up(config.listen)?;
    let mut listeners = vec![Listener::new(listener, Transport::Plain)];
    // The start-up lines after the first two (`startup_lines`), in the order bound.
    let mut more_lines = String::new();
    if let Some(tls) = &config.tls {
        let loaded = crate::tls::load(tls, &config.data_dir, true)?;
        let (socket, tls_local) = bind_start_up(tls.listen)?;
        more_lines = format!(
            "tryst: tls listening on {tls_local}\ntryst: tls certificate {} sha256 {}{}\n",
            loaded.cert_path.display(),
            loaded.fingerprint,
            if loaded.generated {
                " (generated now)"
            } else {
                ""
            }
        );
        listeners.push(Listener::new(socket, Transport::Tls));
    }
    for entry in &config.id_listen {
        let (socket, bound) = bind_start_up(entry.addr)?;
        more_lines.push_str(&format!("tryst: id {} listening on {bound}\n", entry.id));
        listeners.push(Listener::for_id(socket, entry.id));
    }
    more_lines.push_str(&families.bind()?);
    let mut metrics = None;
    if let Some(addr) = config.metrics_listen {
        let (socket, metrics_local) = bind_start_up(addr)?;
        more_lines.push_str(&format!("tryst: metrics listening on {metrics_local}\n"));
        metrics = Some(socket);
    }
    let mut mesh = None;
    if let Some(cluster) = &config.cluster {
        let addr = cluster.mesh_listen;
        let (socket, mesh_local) = bind_start_up(addr)?;
        more_lines.push_str(&format!(
            "tryst: mesh listening on {mesh_local}\ntryst: cluster node {} directory {}\n",
            cluster.node_name,
            cluster.describe_redis()
        ));
        mesh = Some(socket);
    }
    // The families' last lines (e.g. which store a family chose): readers of the earlier
    // lines need not skip them.
    more_lines.push_str(&families.tail_lines());
    {
        // One write: a reader may close the pipe once it has the first line.
        let mut out = io::stdout().lock();
        let lines = startup_lines(local, &config.data_dir) + &more_lines;
        out.write_all(lines.as_bytes())
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

    let mut worker_args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    worker_args.push("--replay-floor".into());
    worker_args.push(started.to_string().into());
    let engine = Engine::start_with_shares(&config.engine, listeners, worker_args, |shares| {
        Ok(shares_bytes(&secrets, shares))
    })
    .map_err(io_err("starting the workers"))?;
    drop(secrets);
    tryst_engine::driver::release_free_memory();
    // The supervisor loop runs as a task on the runtime's threads, not on this one: the
    // HTTP inbox is drained there, so each handed-off connection's task starts on the
    // thread that received it instead of waking another one (a context switch less per
    // HTTP request; docs/performance.md, "The supervisor loop on the runtime").
    let supervisor = runtime.spawn(async move {
        supervise(engine, &config, signals, families, metrics, mesh, started).await
    });
    match runtime.block_on(supervisor) {
        Ok(result) => result,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only a runtime shutting down cancels a task, and this one is still running.
            Err(e) => Err(io_err("running the supervisor")(io::Error::other(e))),
        },
    }
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
    families: families::Opened,
    metrics: Option<TcpListener>,
    mesh: Option<TcpListener>,
    started: u64,
) -> Result<(), ServeError> {
    let (cluster, dispatcher) = start_cluster(&engine, config, mesh)?.unzip();
    // The workers' cluster events (presence, lookups), only with a cluster.
    let cluster_events = match &dispatcher {
        Some(_) => {
            Some(cluster_readiness(&engine).map_err(io_err("registering the cluster events"))?)
        }
        None => None,
    };
    let mut restarts: Vec<u64> = engine.stats().workers.iter().map(|w| w.restarts).collect();
    let (stats, mut stats_requests) = StatsRequester::channel(64);
    // The service families, in routing and `/metrics` order ([`families`]), then the
    // cluster's health and metrics when there is one.
    // The HTTP families' cluster side (channel and mailbox owners, publications in the
    // directory); `None` on a single node.
    let cluster_http = cluster.clone().map(crate::cluster::http::ClusterHttp::new);
    // Families that keep state in the workers' routers ([`families::Opened::worker_links`]).
    let (mut link_updates, mut links) = families.worker_links();
    let mut families = families.into_services(started, cluster_http.clone())?;
    families.extend(
        cluster
            .clone()
            .map(|c| Arc::new(c) as Arc<dyn crate::family::ServiceFamily>),
    );
    if let Some(cluster) = &cluster {
        // Claims from the workers (proof replays, single-shot tags, replace parks).
        let answerer = engine
            .claim_answerer()
            .map_err(io_err("preparing the claim answers"))?;
        let claims =
            crate::cluster::claims::Claims::start(cluster.clone(), answerer, engine.http_inbox());
        families.push(claims);
    }
    families.extend(cluster_http.map(|c| c as Arc<dyn crate::family::ServiceFamily>));
    for family in &families {
        family.start();
    }
    let http = HttpService::new(
        HttpLimits {
            max_connections: config.max_http_connections,
            header_timeout: config.engine.head_timeout,
            max_headers: config.engine.head_max_headers,
        },
        stats,
        families,
    );
    http.set_socket_budget(config.engine.max_sockets_per_worker as u64);
    if let Some(c) = &cluster {
        let c = c.clone();
        http.set_mesh_peers(crate::http::MeshPeers(Box::new(move |conn| {
            c.mesh_client(conn)
        })));
    }
    if let Some(listener) = metrics {
        listener
            .set_nonblocking(true)
            .map_err(io_err("registering the metrics listener"))?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(io_err("registering the metrics listener"))?;
        http.make_metrics_private();
        let http = http.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => http.accept_operator(stream),
                    Err(e) => {
                        // Out of descriptors and the like: the engine's listeners have
                        // their own back-off; here one short pause is enough.
                        tracing::warn!(error = %e, "metrics listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
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
                links.deliver(engine.http_inbox().take_family_reports());
            }
            ready = readable(cluster_events.as_ref()) => {
                ready.map_err(io_err("waiting on the cluster events"))?;
                if let (Some(events), Some(d)) = (&cluster_events, &dispatcher) {
                    let _ = events.try_io(Interest::READABLE, || drain_cluster_events(&engine, d));
                }
            }
            Some(update) = link_updates.next() => links.send(&engine, update),
            Some(reply) = stats_requests.recv() => answer_stats(&engine, reply),
            // The loop is a task on the multi-threaded runtime: reading and checking a
            // large secrets file must not hold the tasks queued behind it on this thread.
            _ = hangup.recv() => tokio::task::block_in_place(|| reload(&mut engine, config)),
            _ = terminate.recv() => begin_shutdown(&mut engine, &http, &mut shutting_down, "SIGTERM"),
            _ = interrupt.recv() => begin_shutdown(&mut engine, &http, &mut shutting_down, "SIGINT"),
            _ = tick.tick() => {
                match engine.poll_workers() {
                    Ok(true) if shutting_down => break,
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "checking workers"),
                }
                if let (Some(d), Some(c)) = (&dispatcher, &cluster) {
                    let stats = engine.stats();
                    c.set_tunnel_bytes(
                        stats.sum(|w| w.mesh_bytes_out),
                        stats.sum(|w| w.mesh_bytes_in),
                    );
                    // A worker that died took its parked connections with it.
                    for w in stats.workers {
                        if restarts.get(w.index).is_some_and(|&r| r != w.restarts) {
                            restarts[w.index] = w.restarts;
                            d.worker_gone(w.index);
                        }
                    }
                }
                let restarted = engine.take_restarted();
                links.tick(&engine, &restarted);
            }
        }
    }
    drop(inbox);
    tracing::info!("all workers exited");
    if let Some(cluster) = &cluster {
        // Leave the directory now rather than when the liveness record expires.
        cluster.directory().leave().await;
    }
    Ok(())
}

/// With `--cluster-redis`: builds the [`crate::cluster::Cluster`] handle, starts its
/// directory and warm-socket tasks and the mesh listener (which gives verified mesh
/// connections to the workers). `None` for a single node: nothing is started.
fn start_cluster(
    engine: &Engine,
    config: &ServeConfig,
    mesh: Option<TcpListener>,
) -> Result<Option<(crate::cluster::Cluster, crate::cluster::reach::Dispatcher)>, ServeError> {
    let (Some(settings), Some(listener)) = (&config.cluster, mesh) else {
        return Ok(None);
    };
    let local = listener
        .local_addr()
        .map_err(io_err("reading the bound address"))?;
    let cluster = crate::cluster::Cluster::new(settings.clone(), local)?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("registering the mesh listener"))?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(io_err("registering the mesh listener"))?;
    let injector = Arc::new(
        engine
            .injector()
            .map_err(io_err("preparing the mesh hand-off"))?,
    );
    cluster.spawn_tasks();
    tokio::spawn(crate::cluster::mesh::serve(
        cluster.clone(),
        listener,
        injector.clone(),
    ));
    let dispatcher = crate::cluster::reach::Dispatcher::start(cluster.clone(), injector);
    tracing::info!(
        node = cluster.node(),
        epoch = cluster.epoch(),
        mesh = %cluster.advertise(),
        "cluster started"
    );
    Ok(Some((cluster, dispatcher)))
}

/// A duplicate of the cluster events socket's fd, registered with tokio only to learn
/// when it is readable (receiving goes through the engine's `ClusterInbox`).
fn cluster_readiness(engine: &Engine) -> io::Result<tokio::net::UnixDatagram> {
    let fd = engine.cluster_inbox().as_fd().try_clone_to_owned()?;
    tokio::net::UnixDatagram::from_std(std::os::unix::net::UnixDatagram::from(fd))
}

/// Readiness of an optional socket (never ready without one).
async fn readable(s: Option<&tokio::net::UnixDatagram>) -> io::Result<()> {
    match s {
        Some(s) => s.readable().await,
        None => std::future::pending().await,
    }
}

/// Hands every queued cluster event to the dispatcher; ends with `WouldBlock`.
fn drain_cluster_events(
    engine: &Engine,
    dispatcher: &crate::cluster::reach::Dispatcher,
) -> io::Result<()> {
    loop {
        match engine.cluster_inbox().try_recv() {
            Ok(Some(ev)) => dispatcher.on_event(ev),
            Ok(None) => return Err(io::ErrorKind::WouldBlock.into()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
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
/// give every worker its new share of the secrets and ask it to reload (the worker
/// re-reads the certificate itself). A file that does not validate changes nothing.
fn reload(engine: &mut Engine, config: &ServeConfig) {
    let secrets = match secrets::load_file(&config.secrets_path) {
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
        ids = secrets.secrets.len(),
        totp_ids = secrets.totp.len(),
        "SIGHUP: secrets file valid; reloading workers"
    );
    if let Err(e) = engine.reload_with_shares(|shares| Ok(shares_bytes(&secrets, shares))) {
        tracing::error!(error = %e, "asking workers to reload");
    }
    drop(secrets);
    tryst_engine::driver::release_free_memory();
}

/// Every worker's part of the secrets file, as the engine hands them over.
fn shares_bytes(secrets: &secrets::SecretsFile, shares: &[WorkerShare]) -> Vec<Vec<u8>> {
    secrets::render_shares(secrets, shares)
        .into_iter()
        .map(String::into_bytes)
        .collect()
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

/// The worker process: loads its share of the secrets (prepared by the supervisor), builds the combined router (native and
/// node-rendezvous with `--totp-skew-steps` and `--node-park-mode`, whose defaults are
/// upstream's: current TOTP step only, a newer park replaces the older) and runs the
/// engine's event loop until shutdown.
///
/// Every replay cache here is in this process's memory, so it is given a replay floor
/// ([`worker_replay_floor`]): proofs stamped at or before it may have been accepted by
/// the worker this one replaces (after a crash) or by the previous relay, and are
/// refused as replays (docs/reliability.md).
pub fn run_worker_process(
    config: &ServeConfig,
    relay_floor: Option<u64>,
) -> Result<(), ServeError> {
    let own = unix_now();
    let replaces = relay_floor.is_some_and(|f| replaces_another_worker(&config.data_dir, f));
    let started_unix = worker_replay_floor(relay_floor, replaces, own);
    // The router is built once the worker knows which keys it owns: it keeps only
    // their secrets.
    let mut load_error = None;
    let build = |share: WorkerShare, prepared: Option<ShareFile>| -> io::Result<_> {
        let loaded = match prepared {
            Some(prepared) => FileSecrets::from_supervisor(&config.secrets_path, share, prepared),
            None => FileSecrets::load_share(&config.secrets_path, share),
        };
        match loaded {
            Ok(secrets) => Ok(build_worker_router(config, secrets, started_unix)),
            Err(e) => {
                let io = io::Error::other(e.to_string());
                load_error = Some(e);
                Err(io)
            }
        }
    };
    let tls = config.tls.clone().map(|tls| {
        let data_dir = config.data_dir.clone();
        Box::new(move || {
            crate::tls::load(&tls, &data_dir, false)
                .map(|loaded| loaded.config)
                .map_err(|e| e.to_string())
        }) as tryst_engine::driver::TlsSource
    });
    let result = run_worker_with(&config.engine, build, tls);
    if let Some(e) = load_error {
        return Err(e.into());
    }
    result.map_err(io_err("worker"))
}

/// A worker's router over `secrets`: the native and node-rendezvous router, then every
/// `CONNECT` family.
fn build_worker_router(
    config: &ServeConfig,
    secrets: FileSecrets,
    started_unix: u64,
) -> RelayRouter<FileSecrets> {
    let router = RelayRouter::new(CompatRouter::new(
        secrets,
        CompatRouterConfig {
            native: NativeRouterConfig {
                proof_window_secs: config.proof_window_secs,
                started_unix,
                ..NativeRouterConfig::default()
            },
            totp_skew_steps: config.totp_skew_steps,
            node_park_mode: config.node_park_mode,
            metrics_private: config.metrics_listen.is_some(),
        },
    ));
    config
        .families
        .connect_families(config.proof_window_secs, started_unix)
        .into_iter()
        .fold(router, RelayRouter::with_family)
}

/// `tryst serve --check-config`: given the configuration [`ServeConfig::load`] accepted,
/// checks what `serve` would check next (the data directory is a directory or can be
/// created, the secrets file parses) without creating, binding or starting anything, and
/// returns the summary to print.
pub fn check_config(config: &ServeConfig) -> Result<String, ServeError> {
    let data_dir = check_data_dir(&config.data_dir)?;
    let secrets = FileSecrets::load(&config.secrets_path)?;
    check_cluster(config.cluster.as_ref())?;
    // The operator's certificate and key must load; a generated pair is made at start.
    if let Some(tls) = config.tls.as_ref().filter(|t| t.cert_and_key.is_some()) {
        crate::tls::load(tls, &config.data_dir, false)?;
    }
    config.families.check()?;
    Ok(config_summary(
        config,
        data_dir,
        secrets.len(),
        secrets.totp_len(),
    ))
}

/// Whether the data directory is usable by this user: a directory it may write into,
/// or missing under a directory it may create it in (the nearest existing one). Nothing
/// is created.
fn check_data_dir(path: &Path) -> Result<DataDirState, ServeError> {
    use nix::unistd::{AccessFlags, access};
    let (state, writable_needed) = match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => (DataDirState::Exists, path.to_owned()),
        Ok(_) => {
            return Err(ServeError::DataDir {
                path: path.to_owned(),
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The nearest existing ancestor (a relative path's is the working directory).
            let parent = path
                .ancestors()
                .skip(1)
                .find(|a| !a.as_os_str().is_empty() && a.exists())
                .unwrap_or_else(|| Path::new("."));
            (DataDirState::WillBeCreated, parent.to_owned())
        }
        Err(source) => {
            return Err(ServeError::DataDir {
                path: path.to_owned(),
                source,
            });
        }
    };
    access(&writable_needed, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|errno| {
        ServeError::DataDirNotWritable {
            path: path.to_owned(),
            within: (state == DataDirState::WillBeCreated).then(|| writable_needed.clone()),
            source: errno.into(),
        }
    })?;
    Ok(state)
}

fn not_writable(path: &Path, within: Option<&Path>) -> String {
    match within {
        None => format!(
            "data directory {} is not writable by this user",
            path.display()
        ),
        Some(parent) => format!(
            "cannot create data directory {}: {} is not writable by this user",
            path.display(),
            parent.display()
        ),
    }
}

/// What `serve` checks of the cluster settings before binding anything (and
/// `--check-config` too): the mesh key file reads and is long enough, and the other
/// nodes have an address to dial.
fn check_cluster(cluster: Option<&crate::cluster::ClusterConfig>) -> Result<(), ServeError> {
    let Some(c) = cluster else {
        return Ok(());
    };
    crate::cluster::load_psk(&c.mesh_psk_file)?;
    if c.mesh_advertise.is_none() && c.mesh_listen.ip().is_unspecified() {
        return Err(crate::cluster::ClusterError::NoAdvertise(c.mesh_listen).into());
    }
    Ok(())
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
/// `secrets` ids with a native secret and `totp_ids` with a node-rendezvous TOTP record.
pub fn config_summary(
    config: &ServeConfig,
    data_dir: DataDirState,
    secrets: usize,
    totp_ids: usize,
) -> String {
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
    let family_listeners = config.families.summary_listeners();
    let totp = match totp_ids {
        0 => String::new(),
        1 => ", 1 TOTP record".to_owned(),
        n => format!(", {n} TOTP records"),
    };
    let metrics = config
        .metrics_listen
        .map(|addr| format!("metrics listen  {addr} (/metrics only there)\n"))
        .unwrap_or_default();
    format!(
        "tryst: configuration ok\n\
         listen          {}\n\
         {tls}\
         {family_listeners}\
         {metrics}\
         data directory  {} ({dir_note})\n\
         secrets         {} ({secrets} {}{totp})\n\
         workers         {} ({} sockets each)\n\
         data path       {data_path}\n",
        config.listen,
        config.data_dir.display(),
        config.secrets_path.display(),
        if secrets == 1 { "id" } else { "ids" },
        e.workers,
        e.max_sockets_per_worker,
    ) + &config.families.summary_tail()
        + &config
            .cluster
            .as_ref()
            .map(|c| {
                format!(
                    "cluster node    {} directory {} mesh {}\n",
                    c.node_name,
                    c.describe_redis(),
                    c.mesh_listen
                )
            })
            .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_worker_takes_its_own_start_as_replay_floor() {
        // The first worker in a slot takes the relay's floor, whenever it starts.
        assert_eq!(worker_replay_floor(Some(100), false, 100), 100);
        assert_eq!(worker_replay_floor(Some(100), false, 105), 100);
        // A replacement takes its own start second.
        assert_eq!(worker_replay_floor(Some(100), true, 105), 105);
        // Started by hand (no relay floor): its own.
        assert_eq!(worker_replay_floor(None, false, 105), 105);
    }

    #[test]
    fn a_worker_finds_its_own_record_only_under_the_same_supervisor_and_floor() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!replaces_another_worker(dir.path(), 100));
        assert!(replaces_another_worker(dir.path(), 100));
        // Another relay start (another floor): a first worker again.
        assert!(!replaces_another_worker(dir.path(), 101));
        assert!(replaces_another_worker(dir.path(), 101));
    }

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
            config_summary(&config, DataDirState::WillBeCreated, 1, 0),
            "tryst: configuration ok\n\
             listen          127.0.0.1:9000\n\
             data directory  /var/lib/tryst (will be created)\n\
             secrets         /var/lib/tryst/secrets.toml (1 id)\n\
             workers         3 (17888 sockets each)\n\
             data path       splice-syscall\n"
        );
        let mut config = config;
        config.families.hive.mirrors = vec![
            crate::hive::mirror::MirrorPeer::parse("http://10.0.0.2:7400").unwrap(),
            crate::hive::mirror::MirrorPeer::parse("http://[::1]:7401").unwrap(),
        ];
        assert!(
            config_summary(&config, DataDirState::Exists, 2, 0)
                .ends_with("data path       splice-syscall\nhive mirrors    http://10.0.0.2:7400, http://[::1]:7401\n")
        );
        let mut with_pg = config.clone();
        with_pg.families.deaddrop.store = crate::deaddrop::StoreChoice::Postgres {
            url: "postgres://tryst:hunter2@db/mail".into(),
            pool_size: 4,
        };
        assert!(
            config_summary(&with_pg, DataDirState::Exists, 2, 0).ends_with(
                "hive mirrors    http://10.0.0.2:7400, http://[::1]:7401\n\
                 dead-drop store postgres host=db dbname=mail user=tryst pool=4\n"
            )
        );
        config.families.stun_listen = Some("0.0.0.0:3478".parse().unwrap());
        assert!(
            config_summary(&config, DataDirState::Exists, 2, 0).contains(
                "listen          127.0.0.1:9000\nstun listen     0.0.0.0:3478\ndata directory"
            )
        );
        // Node-rendezvous TOTP records are counted beside the native ids.
        for (totp, line) in [
            (1, "(2 ids, 1 TOTP record)\n"),
            (3, "(2 ids, 3 TOTP records)\n"),
        ] {
            let summary = config_summary(&config, DataDirState::Exists, 2, totp);
            assert!(summary.contains(line), "{summary}");
        }
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
