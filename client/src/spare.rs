//! [`Spares`]: relay connections opened (and, for TLS, handshaken) ahead of need, so a
//! client's reach does not pay a TCP (+TLS) handshake to the relay before its head.
//!
//! The pool is bounded ([`SpareConfig::count`]), refreshed and closed on idle:
//! - a spare is used at most [`SpareConfig::max_age`] after it was opened (each spare's
//!   own age is jittered down by up to a quarter, so spares opened together are not
//!   replaced together); older ones are closed and replaced. Keep it below the relay's
//!   `--head-timeout` (10 s by default), after which the relay answers `408` and closes
//!   a connection that sent no head;
//! - after [`SpareConfig::idle`] without a [`Spares::take`], the spares are closed and no
//!   new ones are opened until the next take (which opens its own connection);
//! - a spare the relay closed or wrote to (a restart, a `408`) is dropped, never handed
//!   out: [`Spares::take`] checks the one it hands out with a non-blocking
//!   `recv(MSG_PEEK)` (for TLS, bytes queued are given to TLS first: a TLS 1.3 server
//!   sends session tickets after the handshake), and so does the maintainer on each of
//!   its wakes;
//! - failures to open back off with jitter ([`Backoff`]); a take never waits for a
//!   spare: it gets one that is ready, or `None` and opens its own connection.
//!
//! One line at info when the pool is first full (`spare relay connections ready`) and
//! when it closes on idle. The maintainer is a tokio task, started by [`Spares::start`] and stopped when the
//! [`Spares`] is dropped; it holds no lock across an await.

use crate::backoff::Backoff;
use crate::conn::{self, RelayAddr, RelayStream};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How many spares, and how long they live.
#[derive(Debug, Clone, Copy)]
pub struct SpareConfig {
    /// Spare connections kept open (0: none, every reach opens its own).
    pub count: usize,
    /// Most time between opening a spare and using it.
    pub max_age: Duration,
    /// Spares are closed after this long without a take.
    pub idle: Duration,
    /// TCP connect plus TLS handshake of one spare.
    pub connect_timeout: Duration,
}

impl Default for SpareConfig {
    /// Two spares, replaced after 5 s (half the relay's default head timeout), closed
    /// after 60 s without a reach, 10 s to connect.
    fn default() -> Self {
        Self {
            count: 2,
            max_age: Duration::from_secs(5),
            idle: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Counters of a spare pool.
#[derive(Debug, Default)]
pub struct SpareStats {
    /// Spares opened.
    pub opened: AtomicU64,
    /// Takes answered with a spare.
    pub used: AtomicU64,
    /// Takes that found no usable spare.
    pub missed: AtomicU64,
    /// Spares closed unused (aged, idle, or closed or written to by the relay).
    pub discarded: AtomicU64,
    /// Failed attempts to open a spare.
    pub failures: AtomicU64,
}

/// A pool of pre-opened relay connections; see the module docs.
#[derive(Debug)]
pub struct Spares {
    inner: Arc<Inner>,
    maintainer: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Inner {
    relay: RelayAddr,
    config: SpareConfig,
    state: Mutex<State>,
    /// A take happened (refill, or leave idleness), or an open finished.
    wake: Notify,
    stats: SpareStats,
}

#[derive(Debug)]
struct State {
    /// Oldest first.
    ready: VecDeque<Spare>,
    /// Opens under way.
    opening: usize,
    last_take: Instant,
    /// The pool was logged as full since it started or last went idle.
    announced: bool,
}

#[derive(Debug)]
struct Spare {
    stream: RelayStream,
    /// When it must no longer be handed out.
    expires: Instant,
}

impl Spares {
    /// Starts keeping `config.count` spares to `relay` (on the current tokio runtime).
    pub fn start(relay: RelayAddr, config: SpareConfig) -> Self {
        let inner = Arc::new(Inner {
            relay,
            config,
            state: Mutex::new(State {
                ready: VecDeque::with_capacity(config.count),
                opening: 0,
                last_take: Instant::now(),
                announced: false,
            }),
            wake: Notify::new(),
            stats: SpareStats::default(),
        });
        let maintainer = tokio::spawn(maintain(inner.clone()));
        Self { inner, maintainer }
    }

    /// A ready spare (open, not too old, nothing read from the relay), or `None`: the
    /// caller then opens its own connection. Never waits.
    pub fn take(&self) -> Option<RelayStream> {
        let now = Instant::now();
        let mut found = None;
        let mut discarded = 0;
        if let Ok(mut state) = self.inner.state.lock() {
            state.last_take = now;
            while let Some(mut spare) = state.ready.pop_front() {
                if spare.expires > now && untouched(&mut spare.stream) {
                    found = Some(spare.stream);
                    break;
                }
                discarded += 1;
            }
        }
        let stats = &self.inner.stats;
        stats.discarded.fetch_add(discarded, Ordering::Relaxed);
        match found {
            Some(_) => stats.used.fetch_add(1, Ordering::Relaxed),
            None => stats.missed.fetch_add(1, Ordering::Relaxed),
        };
        self.inner.wake.notify_one();
        found
    }

    /// The pool's counters.
    pub fn stats(&self) -> &SpareStats {
        &self.inner.stats
    }

    /// Spares ready now.
    pub fn ready(&self) -> usize {
        self.inner.state.lock().map_or(0, |s| s.ready.len())
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        self.maintainer.abort();
        // Open tasks finishing later find the pool gone (their `Weak` is dead) and close
        // what they opened; the ready spares close with the last `Arc`.
    }
}

/// Whether a spare is open and nothing arrived on it from the relay: one non-blocking
/// `recv(MSG_PEEK)`. Nothing queued: usable. EOF, an error, or bytes on a plain
/// connection (a `408`): not. Bytes on a TLS connection are first given to TLS (a
/// TLS 1.3 server sends session tickets after the handshake): usable if that yields
/// no application byte and no close.
fn untouched(stream: &mut RelayStream) -> bool {
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(stream.tcp()).peek(&mut probe) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
        Ok(n) if n > 0 && matches!(stream, RelayStream::Tls(_)) => {}
        _ => return false,
    }
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    matches!(Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}

/// The maintainer: drops aged and dead spares, opens replacements, goes quiet on idle.
async fn maintain(inner: Arc<Inner>) {
    let config = inner.config;
    if config.count == 0 {
        return;
    }
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let mut retry_at: Option<Instant> = None;
    let (mut seen_failures, mut seen_opened) = (0, 0);
    loop {
        let now = Instant::now();
        let failures = inner.stats.failures.load(Ordering::Relaxed);
        let opened = inner.stats.opened.load(Ordering::Relaxed);
        if failures > seen_failures {
            retry_at = Some(now + backoff.next_delay());
        } else if opened > seen_opened {
            backoff.reset();
        }
        (seen_failures, seen_opened) = (failures, opened);
        if retry_at.is_some_and(|at| at <= now) {
            retry_at = None;
        }
        let (to_open, next) = {
            let Ok(mut state) = inner.state.lock() else {
                return;
            };
            let before = state.ready.len();
            let idle = now.duration_since(state.last_take) >= config.idle;
            if idle {
                if state.announced {
                    tracing::info!("spare relay connections closed: idle");
                }
                state.ready.clear();
                state.announced = false;
            } else {
                state
                    .ready
                    .retain_mut(|s| s.expires > now && untouched(&mut s.stream));
            }
            let dropped = (before - state.ready.len()) as u64;
            inner.stats.discarded.fetch_add(dropped, Ordering::Relaxed);
            let to_open = if idle || retry_at.is_some() {
                0
            } else {
                config
                    .count
                    .saturating_sub(state.ready.len() + state.opening)
            };
            state.opening += to_open;
            // Wake at the first expiry, the end of a back-off, or idleness (a take or a
            // finished open wakes it sooner).
            let next = [
                state.ready.iter().map(|s| s.expires).min(),
                retry_at,
                (!idle).then(|| state.last_take + config.idle),
            ]
            .into_iter()
            .flatten()
            .min();
            (to_open, next)
        };
        for _ in 0..to_open {
            tokio::spawn(open_one(Arc::downgrade(&inner)));
        }
        match next {
            Some(at) => {
                tokio::select! {
                    () = inner.wake.notified() => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            None => inner.wake.notified().await,
        }
    }
}

/// Opens one spare and adds it to the pool (if the pool still exists and wants it).
async fn open_one(pool: std::sync::Weak<Inner>) {
    let Some(inner) = pool.upgrade() else {
        return;
    };
    let (relay, config) = (inner.relay.clone(), inner.config);
    // The pool may be dropped while this connects.
    drop(inner);
    let opened = conn::open(&relay, config.connect_timeout).await;
    let Some(inner) = pool.upgrade() else {
        return;
    };
    // Jittered down by up to a quarter.
    let life = config.max_age.mul_f64(1.0 - rand::random::<f64>() / 4.0);
    if let Ok(mut state) = inner.state.lock() {
        state.opening = state.opening.saturating_sub(1);
        match opened {
            Ok(stream) => {
                state.ready.push_back(Spare {
                    stream,
                    expires: Instant::now() + life,
                });
                inner.stats.opened.fetch_add(1, Ordering::Relaxed);
                if state.ready.len() == config.count && !state.announced {
                    state.announced = true;
                    tracing::info!(spares = config.count, "spare relay connections ready");
                }
            }
            Err(e) => {
                tracing::debug!("opening a spare relay connection: {e}");
                inner.stats.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    inner.wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};

    fn config(count: usize) -> SpareConfig {
        SpareConfig {
            count,
            max_age: Duration::from_secs(60),
            idle: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Polls (deadline 20 s) until `spares` has `want` ready.
    async fn await_ready(spares: &Spares, want: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while spares.ready() < want {
            assert!(Instant::now() < deadline, "{} spares ready", spares.ready());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn spares_are_opened_before_any_take_handed_out_and_replaced() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = RelayAddr::plain(listener.local_addr().unwrap().to_string());
        let spares = Spares::start(relay, config(2));
        // Two connections arrive before any take.
        let (mut first, _) = listener.accept().await.unwrap();
        let (mut second, _) = listener.accept().await.unwrap();
        await_ready(&spares, 2).await;
        let mut a = spares.take().expect("a spare");
        let mut b = spares.take().expect("another spare");
        a.write_all(b"a").await.unwrap();
        b.write_all(b"b").await.unwrap();
        let (mut x, mut y) = ([0u8; 1], [0u8; 1]);
        first.read_exact(&mut x).await.unwrap();
        second.read_exact(&mut y).await.unwrap();
        let mut got = [x[0], y[0]];
        got.sort_unstable();
        assert_eq!(&got, b"ab", "the spares are the accepted connections");
        // Both are replaced.
        let _third = listener.accept().await.unwrap();
        let _fourth = listener.accept().await.unwrap();
        await_ready(&spares, 2).await;
        let stats = spares.stats();
        assert_eq!(stats.used.load(Ordering::Relaxed), 2);
        assert_eq!(stats.opened.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn aged_spares_are_replaced_and_idle_ones_closed_without_replacement() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = RelayAddr::plain(listener.local_addr().unwrap().to_string());
        let spares = Spares::start(
            relay,
            SpareConfig {
                max_age: Duration::from_millis(200),
                idle: Duration::from_secs(600),
                ..config(1)
            },
        );
        let (mut first, _) = listener.accept().await.unwrap();
        // Aged out: closed (EOF on the relay side) and a replacement opened.
        let mut rest = Vec::new();
        assert_eq!(first.read_to_end(&mut rest).await.unwrap(), 0);
        let (_second, _) = listener.accept().await.unwrap();
        drop(spares);
        // Idle: closed and nothing new opened until a take.
        let spares = Spares::start(
            RelayAddr::plain(listener.local_addr().unwrap().to_string()),
            SpareConfig {
                idle: Duration::from_millis(200),
                ..config(1)
            },
        );
        let (mut third, _) = listener.accept().await.unwrap();
        assert_eq!(third.read_to_end(&mut rest).await.unwrap(), 0);
        assert_eq!(spares.ready(), 0);
        // The next take finds none (its caller connects itself) and wakes the pool.
        assert!(spares.take().is_none());
        let (_fourth, _) = listener.accept().await.unwrap();
        assert_eq!(spares.stats().missed.load(Ordering::Relaxed), 1);
    }

    async fn pair() -> (RelayStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (RelayStream::Tcp(a.unwrap()), b.unwrap().0)
    }

    #[tokio::test]
    async fn a_spare_the_relay_wrote_to_closed_or_reset_is_not_untouched() {
        let (mut silent, _server) = pair().await;
        assert!(untouched(&mut silent));

        let (mut answered, mut server) = pair().await;
        server
            .write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
            .await
            .unwrap();
        answered.tcp().readable().await.unwrap();
        assert!(!untouched(&mut answered));

        let (mut closed, server) = pair().await;
        drop(server);
        closed.tcp().readable().await.unwrap();
        assert!(!untouched(&mut closed));

        let (mut reset, server) = pair().await;
        socket2::SockRef::from(&server)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(server);
        reset.tcp().readable().await.unwrap();
        assert!(!untouched(&mut reset));
    }
}
