//! The sink every target forwards to: a plain listener, or hidden servers parked at a
//! tryst relay (re-parking after each pairing).

use super::STEP_TIMEOUT;
use crate::net::{self, Failure};
use crate::proto::ParkAuth;
use crate::stats::Errors;
use crate::transport::{Conn, TlsClient};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tryst_engine::auth::Secret;
use uuid::Uuid;

/// Parked connections per id of a tryst target's sink.
const TRYST_PARKED: usize = 4;

/// A sink connection: plain TCP (which can be drained without copies) or TLS.
pub(super) trait SinkStream: AsyncRead + AsyncWrite + Unpin {
    /// The TCP socket when nothing but TCP is in the way.
    fn plain(&self) -> Option<&TcpStream>;
}

impl SinkStream for TcpStream {
    fn plain(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl SinkStream for tokio_rustls::server::TlsStream<TcpStream> {
    fn plain(&self) -> Option<&TcpStream> {
        None
    }
}

impl SinkStream for Conn {
    fn plain(&self) -> Option<&TcpStream> {
        match self {
            Self::Plain(s) => Some(s),
            Self::Tls(_) => None,
        }
    }
}

/// Serves one sink connection (plain TCP or TLS) whose first bytes (`first`, possibly
/// empty) were read already. The first byte is the mode: `E` echo, `B` bulk read into a
/// buffer, `Z` bulk spliced into `/dev/null` (read as `B` over TLS); a bulk
/// connection is answered with the count of bytes it carried, 8 bytes little-endian.
pub(super) async fn sink_conn<S: SinkStream>(mut s: S, first: Vec<u8>) -> Result<(), Failure> {
    let mut first = first;
    if first.is_empty() {
        let mut b = [0u8; 1];
        match s.read(&mut b).await {
            // A readiness probe (closed or reset through a proxy before any byte): every
            // workload connection sends its mode byte first, and its failures are
            // counted on the generator's side.
            Ok(0) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Ok(_) => first.push(b[0]),
            Err(e) => return Err(Failure::io("sink/read", &e)),
        }
    }
    match first[0] {
        b'E' => net::echo_serve(&mut s, &first[1..], "sink")
            .await
            .map(|_| ()),
        mode @ (b'B' | b'Z') => {
            let mut count = (first.len() - 1) as u64;
            match s.plain() {
                Some(tcp) if mode == b'Z' => {
                    count += super::discard::drain(tcp)
                        .await
                        .map_err(|e| Failure::io("sink/splice", &e))?;
                }
                _ => {
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        let n = s
                            .read(&mut buf)
                            .await
                            .map_err(|e| Failure::io("sink/read", &e))?;
                        if n == 0 {
                            break;
                        }
                        count += n as u64;
                    }
                }
            }
            s.write_all(&count.to_le_bytes())
                .await
                .map_err(|e| Failure::io("sink/ack", &e))?;
            s.shutdown()
                .await
                .map_err(|e| Failure::io("sink/shutdown", &e))
        }
        other => Err(Failure(format!("sink: unknown mode byte {other}"))),
    }
}

/// Accepts and serves sink connections: plain, or TLS terminated with `tls`.
pub(super) async fn run_sink_listener(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    errors: Rc<RefCell<Errors>>,
) {
    loop {
        let Ok((s, _)) = listener.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let errors = errors.clone();
        let tls = tls.clone();
        tokio::task::spawn_local(async move {
            let served = match tls {
                None => sink_conn(s, Vec::new()).await,
                Some(acceptor) => {
                    match tokio::time::timeout(STEP_TIMEOUT, acceptor.accept(s)).await {
                        Ok(Ok(s)) => sink_conn(s, Vec::new()).await,
                        // A readiness probe connects and closes without a handshake.
                        Ok(Err(e))
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::UnexpectedEof
                                    | std::io::ErrorKind::ConnectionReset
                            ) =>
                        {
                            Ok(())
                        }
                        Ok(Err(e)) => Err(crate::transport::tls_failure("sink/tls handshake", &e)),
                        Err(_) => Err(Failure::timeout("sink/tls handshake")),
                    }
                }
            };
            if let Err(f) = served {
                errors.borrow_mut().add(f.0);
            }
        });
    }
}

/// The sink as hidden servers parked at a tryst relay (over TLS with `tls`).
pub(super) fn spawn_tryst_sink(
    relay: SocketAddr,
    ids: &[(Uuid, Vec<u8>)],
    tls: Option<TlsClient>,
    stop: watch::Receiver<bool>,
    errors: Rc<RefCell<Errors>>,
) {
    for (id, secret) in ids {
        for _ in 0..TRYST_PARKED {
            let id = *id;
            let auth = ParkAuth::Native(Secret::new(secret.clone()));
            let mut stop = stop.clone();
            let errors = errors.clone();
            let tls = tls.clone();
            tokio::task::spawn_local(async move {
                loop {
                    if *stop.borrow() {
                        break;
                    }
                    let parked =
                        net::park(relay, None, &id, &auth, tls.as_ref(), STEP_TIMEOUT).await;
                    let mut s: Conn = match parked {
                        Ok(s) => s,
                        // The relay closing while the run stops is no failure.
                        Err(_) if *stop.borrow() => break,
                        Err(f) => {
                            errors.borrow_mut().add(f.0);
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(250)) => continue,
                                _ = stop.changed() => break,
                            }
                        }
                    };
                    let mut b = [0u8; 1];
                    let got = tokio::select! {
                        r = s.read(&mut b) => r,
                        _ = stop.changed() => break,
                    };
                    match got {
                        // A relay being stopped at the end closes its parked connections.
                        Ok(0) if *stop.borrow() => break,
                        Ok(0) => errors
                            .borrow_mut()
                            .add("hidden/parked: closed by the relay"),
                        Err(e) => errors
                            .borrow_mut()
                            .add(Failure::io("hidden/parked read", &e).0),
                        Ok(_) => {
                            let errors = errors.clone();
                            tokio::task::spawn_local(async move {
                                if let Err(f) = sink_conn(s, vec![b[0]]).await {
                                    errors.borrow_mut().add(f.0);
                                }
                            });
                        }
                    }
                }
            });
        }
    }
}

/// A job for a sink thread: spawns local tasks on that thread's runtime, which count
/// their failures in the thread's list.
type Job = Box<dyn FnOnce(Rc<RefCell<Errors>>) + Send>;

/// The sink spread over threads of its own (each a current-thread runtime, pinned like
/// the pairing generators, away from the relays' CPU), so that for every target the
/// sink's side of a pairing (for tryst a re-park with its proof; for the others an
/// accept) is not a single thread's work while the relay is measured.
pub(super) struct SinkThreads {
    jobs: Vec<tokio::sync::mpsc::UnboundedSender<Job>>,
    threads: Vec<std::thread::JoinHandle<Errors>>,
}

impl SinkThreads {
    /// `count` threads, pinned round robin to `cpus` (empty: not pinned).
    pub(super) fn start(count: usize, cpus: &[usize]) -> std::io::Result<Self> {
        let mut jobs = Vec::new();
        let mut threads = Vec::new();
        for t in 0..count.max(1) {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
            let cpu = (!cpus.is_empty()).then(|| cpus[t % cpus.len()]);
            let handle = std::thread::Builder::new()
                .name(format!("sink-{t}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        super::workloads::pin_current_thread(cpu);
                    }
                    let errors = Rc::new(RefCell::new(Errors::default()));
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        errors.borrow_mut().add("sink: no runtime");
                        return errors.take();
                    };
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&rt, async {
                        while let Some(job) = rx.recv().await {
                            job(errors.clone());
                        }
                    });
                    drop(local);
                    errors.take()
                })?;
            jobs.push(tx);
            threads.push(handle);
        }
        Ok(Self { jobs, threads })
    }

    /// Every thread accepts and serves connections from `listener`, terminating TLS with
    /// `tls` when given.
    pub(super) fn listen(
        &self,
        listener: &std::net::TcpListener,
        tls: Option<&TlsAcceptor>,
    ) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        for tx in &self.jobs {
            let own = listener.try_clone()?;
            let tls = tls.cloned();
            let _ = tx.send(Box::new(move |errors| match TcpListener::from_std(own) {
                Ok(l) => {
                    tokio::task::spawn_local(run_sink_listener(l, tls, errors));
                }
                Err(e) => errors.borrow_mut().add(Failure::io("sink/listener", &e).0),
            }));
        }
        Ok(())
    }

    /// Hidden servers parked at a tryst relay under `ids`, the ids dealt round robin
    /// over the threads ([`spawn_tryst_sink`] on each).
    pub(super) fn tryst(
        &self,
        relay: SocketAddr,
        ids: &[(Uuid, Vec<u8>)],
        tls: Option<&TlsClient>,
        stop: &watch::Receiver<bool>,
    ) {
        let n = self.jobs.len();
        for (t, tx) in self.jobs.iter().enumerate() {
            let mine: Vec<(Uuid, Vec<u8>)> = ids.iter().skip(t).step_by(n).cloned().collect();
            let stop = stop.clone();
            let tls = tls.cloned();
            let _ = tx.send(Box::new(move |errors| {
                spawn_tryst_sink(relay, &mine, tls, stop, errors);
            }));
        }
    }

    /// Stops the threads and returns what their sinks counted as errors.
    pub(super) fn finish(self) -> Errors {
        drop(self.jobs);
        let mut all = Errors::default();
        for t in self.threads {
            match t.join() {
                Ok(e) => all.merge(&e),
                Err(_) => all.add("sink: thread panicked"),
            }
        }
        all
    }
}
