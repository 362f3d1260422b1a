//! Moving a tunnel's bytes both ways.
//!
//! - [`splice_join`]: two TCP sockets joined with `splice(2)` through one pipe per
//!   direction (Linux): payload never enters user space. Readiness comes from tokio;
//!   the calls are `nix::fcntl::splice`, so there is no `unsafe` here. Pipes are asked
//!   for [`PIPE_SIZE`] (fewer, larger splices per GB than the default 64 KiB; HAProxy's
//!   `tune.pipesize` model) and held only while bytes are in flight: taken from a
//!   process-wide pool when a socket turns readable, given back empty when it has
//!   nothing more, closed if a failure leaves bytes in them. An idle tunnel holds no
//!   pipe, and a new tunnel usually costs no `pipe2`/`fcntl`/`close` calls.
//! - [`splice_reach`]: a local client's socket joined with a reach whose head was just
//!   sent, without waiting for the relay's 200 (the client's bytes follow the head at
//!   once; the relay's answer is read before anything goes back).
//! - [`splice_from_pipe`] / [`splice_to_pipe`]: a pipe (stdin, stdout: ssh runs a
//!   `ProxyCommand` on pipes, see [`stdio_pipes`]) and a TCP socket, one `splice(2)`
//!   straight between them per chunk, no pipe of ours in between.
//! - [`copy_join`]: any two async streams (TLS, stdin/stdout that are not both pipes)
//!   through one fixed [`COPY_BUFFER`] per direction.
//!
//! Both forward a half-close (EOF on one side becomes `shutdown(SHUT_WR)` on the other,
//! the opposite direction keeps flowing), count bytes as they move, and on an error in
//! either direction stop both (TCP sockets are closed with a reset so the peer learns).

use crate::conn;
use nix::fcntl::{FcntlArg, SpliceFFlags, fcntl, splice};
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, Interest};
use tokio::net::TcpStream;

/// Bytes per direction of [`copy_join`]'s buffer.
pub const COPY_BUFFER: usize = 64 * 1024;
/// Pipe capacity asked for (`F_SETPIPE_SZ`). 1 MiB, not the relay's 256 KiB default:
/// measured against bore with the relay and both agents on one CPU, it cut the CPU per
/// GB of `tryst connect` -> relay -> `tryst expose` by 4-8 % and raised `tryst
/// expose`'s throughput behind the relay's port for an id from 1.88x to 2.11x bore's
/// at one pair (docs/performance.md; more with the relay's `--pipe-size 1048576` too).
/// The kernel grants less when the user is over `fs.pipe-user-pages-soft` (64 MiB of
/// pipe capacity by default, counted whether the pipes are full or empty); the pipe
/// then keeps what it has and splices are that large.
pub const PIPE_SIZE: usize = 1024 * 1024;
/// Most empty pipes kept for reuse in one process: 16 MiB of capacity against the
/// user's `fs.pipe-user-pages-soft`, a quarter of its default.
pub const SPARE_PIPES: usize = 16;

/// The process's empty pipes, left by tunnel directions that ended cleanly.
static PIPES: PipePool = PipePool::new();

/// Byte counters of a tunnel, added to as bytes move (so long tunnels show up in
/// metrics before they end).
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes from the first stream to the second.
    pub a_to_b: AtomicU64,
    /// Bytes from the second stream to the first.
    pub b_to_a: AtomicU64,
}

/// Joins two TCP sockets with `splice(2)` until both directions have ended. Returns the
/// bytes moved `(a to b, b to a)`.
pub async fn splice_join(
    a: &TcpStream,
    b: &TcpStream,
    counters: &Counters,
) -> io::Result<(u64, u64)> {
    splice_join_with(&PIPES, a, b, counters).await
}

async fn splice_join_with(
    pipes: &PipePool,
    a: &TcpStream,
    b: &TcpStream,
    counters: &Counters,
) -> io::Result<(u64, u64)> {
    let result = tokio::try_join!(
        async {
            let n = splice_direction(pipes, a, b, &counters.a_to_b).await?;
            half_close(b);
            Ok(n)
        },
        async {
            let n = splice_direction(pipes, b, a, &counters.b_to_a).await?;
            half_close(a);
            Ok(n)
        }
    );
    if result.is_err() {
        reset(a);
        reset(b);
    }
    result
}

/// Joins a local client's socket with a reach whose head was just sent on `relay`
/// ([`conn::open_and_send`]), without waiting for the relay's answer: `local → relay`
/// starts at once (the relay delivers bytes sent after a reach head to the hidden server
/// once paired, in order), `relay → local` once the relay's `200` arrived, beginning
/// with the bytes that came with it. An EOF from `local` is forwarded only after the
/// 200, so a client that half-closes early does not abandon its reach.
///
/// A refusal, or no answer within `answer_timeout`, is the outer error: nothing from
/// the relay reached `local`, which is left open for the caller to close. Otherwise the
/// tunnel's result as [`splice_join`]'s (`local → relay`, `relay → local`; the bytes
/// that came with the 200 are counted).
pub async fn splice_reach(
    local: &TcpStream,
    relay: &mut TcpStream,
    answer_timeout: Duration,
    counters: &Counters,
) -> Result<io::Result<(u64, u64)>, conn::Error> {
    // The answer needs a reader while the splice uses the socket: both halves borrow it.
    let (mut from_relay, to_relay) = relay.split();
    let relay_sock: &TcpStream = to_relay.as_ref();
    let up = splice_direction(&PIPES, local, relay_sock, &counters.a_to_b);
    tokio::pin!(up);
    let answer = conn::answer(&mut from_relay, answer_timeout);
    tokio::pin!(answer);
    let mut up_done = None;
    let early = loop {
        tokio::select! {
            r = &mut up, if up_done.is_none() => up_done = Some(r),
            a = &mut answer => break a?,
        }
    };
    let up = async {
        let n = match up_done {
            Some(r) => r?,
            None => up.await?,
        };
        half_close(relay_sock);
        Ok(n)
    };
    let down = async {
        write_all_to(local, &early).await?;
        counters
            .b_to_a
            .fetch_add(early.len() as u64, Ordering::Relaxed);
        let n = splice_direction(&PIPES, relay_sock, local, &counters.b_to_a).await?;
        half_close(local);
        Ok(n + early.len() as u64)
    };
    let result = tokio::try_join!(up, down);
    if result.is_err() {
        reset(local);
        reset(relay_sock);
    }
    Ok(result)
}

/// `write_all` on a socket shared with a splice in the other direction.
async fn write_all_to(to: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes the coming close a reset (`SO_LINGER` 0), so the peer sees the failure.
pub fn reset(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

/// A pipe for one splice direction, and the most bytes one splice into it can move.
#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

/// Empty pipes kept for reuse (at most [`SPARE_PIPES`]).
#[derive(Debug)]
struct PipePool {
    spare: Mutex<Vec<Pipe>>,
    /// Pipes created so far (tests).
    created: AtomicU64,
}

impl PipePool {
    const fn new() -> Self {
        Self {
            spare: Mutex::new(Vec::new()),
            created: AtomicU64::new(0),
        }
    }

    /// A spare pipe, or a new one.
    fn take(&self) -> io::Result<Pipe> {
        match self.spare.lock().ok().and_then(|mut spare| spare.pop()) {
            Some(pipe) => Ok(pipe),
            None => {
                self.created.fetch_add(1, Ordering::Relaxed);
                Pipe::new()
            }
        }
    }

    /// Keeps an empty pipe for the next tunnel (closes it when enough are kept).
    fn give_back(&self, pipe: Pipe) {
        if let Ok(mut spare) = self.spare.lock()
            && spare.len() < SPARE_PIPES
        {
            spare.push(pipe);
        }
    }
}

/// A non-blocking, close-on-exec pipe grown to `size` bytes when the kernel allows:
/// `(read end, write end, capacity)`. When the kernel refuses the size (the user is over
/// `fs.pipe-user-pages-soft`, or `size` is above `fs.pipe-max-size`), the pipe keeps
/// the capacity it has and that is what is returned.
pub fn sized_pipe(size: usize) -> io::Result<(OwnedFd, OwnedFd, usize)> {
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
    let asked = i32::try_from(size).unwrap_or(i32::MAX);
    let capacity = fcntl(write.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(asked))
        .or_else(|_| fcntl(write.as_raw_fd(), FcntlArg::F_GETPIPE_SZ))
        .map_or(64 * 1024, |n| n as usize);
    Ok((read, write, capacity))
}

impl Pipe {
    /// A new pipe, grown to [`PIPE_SIZE`] when the kernel allows.
    fn new() -> io::Result<Self> {
        let (read, write, capacity) = sized_pipe(PIPE_SIZE)?;
        Ok(Self {
            read,
            write,
            capacity,
        })
    }
}

/// Forwards a half-close: EOF read from one side becomes `shutdown(SHUT_WR)` on `to`; the
/// other direction carries on.
fn half_close(to: &TcpStream) {
    let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
}

/// One direction: socket → pipe → socket, until EOF from `from` (not forwarded: the
/// caller shuts `to` down when it is time).
///
/// The pipe is always emptied before the next fill, so a `WouldBlock` from a splice
/// always means the socket is not ready, never the pipe; tokio's readiness is cleared
/// only then. A pipe is held only while bytes are in flight: taken from `pipes` when
/// `from` is readable, given back (empty) when `from` has nothing more for now or ends,
/// so an idle tunnel holds none. On an error the pipe is closed with whatever it holds.
async fn splice_direction(
    pipes: &PipePool,
    from: &TcpStream,
    to: &TcpStream,
    count: &AtomicU64,
) -> io::Result<u64> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let mut held: Option<Pipe> = None;
    let mut total = 0u64;
    loop {
        let (filled, pipe) = loop {
            from.readable().await?;
            let pipe = match held.take() {
                Some(pipe) => pipe,
                None => pipes.take()?,
            };
            match from.try_io(Interest::READABLE, || {
                splice(from, None, &pipe.write, None, pipe.capacity, flags).map_err(io::Error::from)
            }) {
                Ok(n) => break (n, pipe),
                // Drained for now: the (empty) pipe goes back while this side idles.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => pipes.give_back(pipe),
                Err(e) => return Err(e),
            }
        };
        if filled == 0 {
            pipes.give_back(pipe);
            return Ok(total);
        }
        let mut in_pipe = filled;
        while in_pipe > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(&pipe.read, None, to, None, in_pipe, flags).map_err(io::Error::from)
            }) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    in_pipe -= n;
                    total += n as u64;
                    count.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        // Empty again; kept while `from` may have more.
        held = Some(pipe);
    }
}

/// stdin and stdout as pipes registered with the runtime, when both are pipes (ssh runs
/// a `ProxyCommand` on two); `Ok(None)` when either is something else (a terminal, a
/// file, a socket), which the caller copies instead. Both are made non-blocking, so
/// after `Some` the process's stdin and stdout are for these two only.
pub fn stdio_pipes() -> io::Result<
    Option<(
        tokio::net::unix::pipe::Receiver,
        tokio::net::unix::pipe::Sender,
    )>,
> {
    use std::os::fd::AsFd as _;
    let (stdin, stdout) = (io::stdin(), io::stdout());
    if !is_fifo(stdin.as_fd())? || !is_fifo(stdout.as_fd())? {
        return Ok(None);
    }
    let input =
        tokio::net::unix::pipe::Receiver::from_owned_fd(stdin.as_fd().try_clone_to_owned()?)?;
    let output =
        tokio::net::unix::pipe::Sender::from_owned_fd(stdout.as_fd().try_clone_to_owned()?)?;
    Ok(Some((input, output)))
}

fn is_fifo(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<bool> {
    let stat = nix::sys::stat::fstat(fd.as_raw_fd())?;
    Ok(stat.st_mode & nix::libc::S_IFMT == nix::libc::S_IFIFO)
}

/// Which of a pipe end and a socket a splice between them that answered `EAGAIN` was
/// waiting for: `(pipe ready, socket ready)` from a `poll(2)` that does not wait.
fn ready_now(
    pipe: std::os::fd::BorrowedFd<'_>,
    pipe_events: nix::poll::PollFlags,
    sock: &TcpStream,
    sock_events: nix::poll::PollFlags,
) -> io::Result<(bool, bool)> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd as _;
    let mut fds = [
        PollFd::new(pipe, pipe_events),
        PollFd::new(sock.as_fd(), sock_events),
    ];
    poll(&mut fds, PollTimeout::ZERO)?;
    let ready = |fd: &PollFd<'_>, want: PollFlags| {
        fd.revents()
            .is_some_and(|r| r.intersects(want | PollFlags::POLLERR | PollFlags::POLLHUP))
    };
    Ok((ready(&fds[0], pipe_events), ready(&fds[1], sock_events)))
}

/// A splice attempt run under one side's `try_io`.
type Attempt<'a> = &'a mut dyn FnMut() -> io::Result<Step>;

/// What one splice between a pipe end and a socket did.
enum Step {
    /// Moved this many bytes (0: end of stream).
    Moved(usize),
    /// Not ready; the side(s) found not ready had their readiness cleared.
    Wait,
}

/// One splice between a pipe end and a socket, run inside both sides' `try_io` so that
/// a side found not ready loses its readiness only if no wake-up arrived since the
/// splice began (tokio compares readiness ticks). A splice's `EAGAIN` does not say which
/// side was not ready, so a non-waiting `poll(2)` tells, and only that side is cleared:
/// clearing the other would wait for an edge that may never come.
///
/// `pipe_try_io` and `sock_try_io` are the two sides' `try_io`; `ready` is
/// [`ready_now`] for the direction.
fn splice_step(
    pipe_try_io: impl FnOnce(Attempt<'_>) -> io::Result<Step>,
    sock_try_io: &dyn Fn(Attempt<'_>) -> io::Result<Step>,
    mut splice_once: impl FnMut() -> nix::Result<usize>,
    ready: impl Fn() -> io::Result<(bool, bool)>,
) -> io::Result<Step> {
    let mut pipe_idle = false;
    let outcome = pipe_try_io(&mut || {
        let inner = sock_try_io(&mut || match splice_once() {
            Ok(n) => Ok(Step::Moved(n)),
            Err(nix::errno::Errno::EAGAIN) => {
                let (pipe_ready, sock_ready) = ready()?;
                pipe_idle = !pipe_ready;
                if !sock_ready {
                    // Clears the socket's readiness.
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(Step::Wait)
                }
            }
            Err(nix::errno::Errno::EINTR) => Ok(Step::Wait),
            Err(e) => Err(e.into()),
        });
        match inner {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && pipe_idle => Err(e),
            Ok(Step::Wait) if pipe_idle => Err(io::ErrorKind::WouldBlock.into()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Step::Wait),
            other => other,
        }
    });
    match outcome {
        // The pipe's readiness was cleared.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Step::Wait),
        other => other,
    }
}

/// Runs `step` (one wait for readiness and one [`splice_step`]) until the end of the
/// stream, counting the bytes moved; after a `Wait` that cleared nothing it yields
/// before trying again.
async fn run_steps(
    count: &AtomicU64,
    mut step: impl AsyncFnMut() -> io::Result<Step>,
) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        match step().await? {
            Step::Moved(0) => return Ok(total),
            Step::Moved(n) => {
                total += n as u64;
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
            Step::Wait => tokio::task::yield_now().await,
        }
    }
}

/// One direction straight from a pipe into a socket (`splice(2)` pipe → socket, no pipe
/// of ours in between), until the pipe's writer closes; the socket is then half-closed.
/// Readiness: `splice_step`.
pub async fn splice_from_pipe(
    from: &tokio::net::unix::pipe::Receiver,
    to: &TcpStream,
    count: &AtomicU64,
) -> io::Result<u64> {
    use nix::poll::PollFlags;
    use std::os::fd::AsFd as _;
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let total = run_steps(count, async || {
        from.readable().await?;
        to.writable().await?;
        splice_step(
            |f| from.try_io(f),
            &|f| to.try_io(Interest::WRITABLE, f),
            || splice(from, None, to, None, PIPE_SIZE, flags),
            || ready_now(from.as_fd(), PollFlags::POLLIN, to, PollFlags::POLLOUT),
        )
    })
    .await?;
    half_close(to);
    Ok(total)
}

/// One direction straight from a socket into a pipe (`splice(2)` socket → pipe), until
/// the socket's peer half-closes; readiness as in [`splice_from_pipe`]. The pipe is not
/// closed here (the caller decides when its writer goes away).
pub async fn splice_to_pipe(
    from: &TcpStream,
    to: &tokio::net::unix::pipe::Sender,
    count: &AtomicU64,
) -> io::Result<u64> {
    use nix::poll::PollFlags;
    use std::os::fd::AsFd as _;
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    run_steps(count, async || {
        from.readable().await?;
        to.writable().await?;
        splice_step(
            |f| to.try_io(f),
            &|f| from.try_io(Interest::READABLE, f),
            || splice(from, None, to, None, PIPE_SIZE, flags),
            || ready_now(to.as_fd(), PollFlags::POLLOUT, from, PollFlags::POLLIN),
        )
    })
    .await
}

/// Joins two async streams through one fixed buffer per direction until both directions
/// have ended. Returns the bytes moved `(a to b, b to a)`.
pub async fn copy_join<A, B>(a: A, b: B, counters: &Counters) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite,
    B: AsyncRead + AsyncWrite,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    tokio::try_join!(
        copy_direction(&mut a_read, &mut b_write, &counters.a_to_b),
        copy_direction(&mut b_read, &mut a_write, &counters.b_to_a)
    )
}

/// One direction through a fixed buffer; EOF becomes a shutdown of `to`.
pub async fn copy_direction<R, W>(from: &mut R, to: &mut W, count: &AtomicU64) -> io::Result<u64>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(total);
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        total += n as u64;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pipe_spliced_into_a_socket_arrives_whole_and_its_end_half_closes() {
        let (a, mut b) = pair().await;
        let (mut writer, reader) = tokio::net::unix::pipe::pipe().unwrap();
        let data = pattern(8 << 20, 3);
        let feed = data.clone();
        // The writer outpaces the socket, then the socket's reader outpaces the writer:
        // both sides' "not ready" happen, and each is waited for, never spun on.
        let fill = tokio::spawn(async move {
            for chunk in feed.chunks(100_000) {
                writer.write_all(chunk).await.unwrap();
            }
        });
        let count = AtomicU64::new(0);
        let got = async {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            got
        };
        let (moved, got) = tokio::time::timeout(Duration::from_secs(60), async {
            tokio::join!(splice_from_pipe(&reader, &a, &count), got)
        })
        .await
        .expect("no progress for 60 s");
        fill.await.unwrap();
        assert_eq!(moved.unwrap(), data.len() as u64);
        assert_eq!(count.load(Ordering::Relaxed), data.len() as u64);
        assert!(got == data, "the bytes differ");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_socket_spliced_into_a_pipe_arrives_whole_until_the_peer_half_closes() {
        let (a, mut b) = pair().await;
        let (writer, mut reader) = tokio::net::unix::pipe::pipe().unwrap();
        let data = pattern(32 << 20, 4);
        let feed = data.clone();
        let send = tokio::spawn(async move {
            b.write_all(&feed).await.unwrap();
            b.shutdown().await.unwrap();
            b
        });
        let count = AtomicU64::new(0);
        let (moved, got) = tokio::time::timeout(Duration::from_secs(60), async {
            tokio::join!(
                async {
                    let n = splice_to_pipe(&a, &writer, &count).await;
                    drop(writer);
                    n
                },
                async {
                    let mut got = Vec::new();
                    // Small reads with pauses, then large ones, in turns: the pipe fills
                    // and drains many times, so the splice waits on either side often
                    // (a lost wake-up there would stall this test).
                    let mut buf = vec![0u8; 256 * 1024];
                    for turn in 0usize.. {
                        let want = if turn % 64 < 32 { 4096 } else { buf.len() };
                        let n = reader.read(&mut buf[..want]).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                        if want == 4096 {
                            tokio::task::yield_now().await;
                        }
                    }
                    got
                }
            )
        })
        .await
        .expect("no progress for 60 s");
        let _b = send.await.unwrap();
        assert_eq!(moved.unwrap(), data.len() as u64);
        assert_eq!(count.load(Ordering::Relaxed), data.len() as u64);
        assert!(got == data, "the bytes differ");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn splice_moves_bytes_both_ways_and_forwards_half_close() {
        // outer_a <-> a  [splice]  b <-> outer_b, through the process-wide pool.
        let counters = clean_tunnel(&PIPES, &pattern(3 << 20, 1), &pattern(2 << 20, 2)).await;
        assert_eq!(counters.a_to_b.load(Ordering::Relaxed), 3 << 20);
    }

    /// One tunnel through `pipes`: `up` from outer a to outer b, `down` back, both ends
    /// half-closed after sending. Checks the bytes and the join's result; returns the
    /// tunnel's counters.
    async fn clean_tunnel(pipes: &PipePool, up: &[u8], down: &[u8]) -> Counters {
        let (mut outer_a, a) = pair().await;
        let (b, mut outer_b) = pair().await;
        let counters = Counters::default();
        let (mut ar, mut aw) = outer_a.split();
        let (mut br, mut bw) = outer_b.split();
        let (joined, got_up, got_down, _, _) = tokio::join!(
            splice_join_with(pipes, &a, &b, &counters),
            async {
                let mut v = Vec::new();
                br.read_to_end(&mut v).await.unwrap();
                v
            },
            async {
                let mut v = Vec::new();
                ar.read_to_end(&mut v).await.unwrap();
                v
            },
            async {
                aw.write_all(up).await.unwrap();
                aw.shutdown().await.unwrap();
            },
            async {
                bw.write_all(down).await.unwrap();
                bw.shutdown().await.unwrap();
            }
        );
        assert!(got_up == up, "a->b differs");
        assert!(got_down == down, "b->a differs");
        assert_eq!(joined.unwrap(), (up.len() as u64, down.len() as u64));
        counters
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipes_are_grown_reused_and_closed_when_a_direction_fails() {
        let pipes = PipePool::new();
        let spare = |pipes: &PipePool| pipes.spare.lock().unwrap().len();
        clean_tunnel(&pipes, &pattern(1 << 20, 4), &pattern(300_000, 5)).await;
        // One pipe per direction at most, all given back empty.
        let kept = spare(&pipes);
        assert!((1..=2).contains(&kept), "{kept} pipes kept");
        for pipe in pipes.spare.lock().unwrap().iter() {
            let granted = fcntl(pipe.write.as_raw_fd(), FcntlArg::F_GETPIPE_SZ).unwrap();
            assert_eq!(pipe.capacity, granted as usize);
            assert!(pipe.capacity >= 64 * 1024);
            let mut byte = [0u8; 1];
            assert_eq!(
                nix::unistd::read(pipe.read.as_raw_fd(), &mut byte),
                Err(nix::errno::Errno::EAGAIN),
                "a kept pipe is empty"
            );
        }

        // Reused: two directions never need more than two pipes, however many tunnels.
        clean_tunnel(&pipes, &pattern(200_000, 6), &pattern(5, 7)).await;
        clean_tunnel(&pipes, &[], &pattern(100_000, 8)).await;
        assert!(pipes.created.load(Ordering::Relaxed) <= 2);
        let kept = spare(&pipes);

        // The far end resets: b -> a takes a pipe, fails, and closes it; a -> b never
        // had bytes, so it held none.
        let (_outer_a, a) = pair().await;
        let (b, outer_b) = pair().await;
        reset(&outer_b);
        drop(outer_b);
        let counters = Counters::default();
        assert!(splice_join_with(&pipes, &a, &b, &counters).await.is_err());
        assert_eq!(spare(&pipes), kept - 1);
    }

    const HEAD: &[u8] = b"CONNECT uuid:0b6c6f1e-3c4b-4a8e-9d2f-6a1c2b3d4e5f HTTP/1.1\r\n\r\n";

    /// A listener standing in for the relay.
    async fn fake_relay() -> (TcpListener, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        s.read_exact(&mut v).await.unwrap();
        v
    }

    /// Fails a test that would otherwise hang.
    async fn bounded<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .expect("finished within 20 s")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn splice_reach_sends_the_clients_bytes_before_the_200_and_delivers_what_came_with_it() {
        bounded(async {
            let (mut outer, local) = pair().await;
            let (listener, addr) = fake_relay().await;
            let mut relay = TcpStream::connect(addr).await.unwrap();
            relay.write_all(HEAD).await.unwrap();
            outer.write_all(b"GET").await.unwrap();
            let relay_side = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                // The client's bytes arrive before the relay answered anything.
                let got = read_n(&mut s, HEAD.len() + 3).await;
                assert_eq!(&got[HEAD.len()..], b"GET");
                s.write_all(b"HTTP/1.1 200\r\n\r\nhello").await.unwrap();
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).await.unwrap();
                s.write_all(&rest).await.unwrap();
                s.shutdown().await.unwrap();
                rest
            });
            let counters = Counters::default();
            let client = async {
                assert_eq!(read_n(&mut outer, 5).await, b"hello");
                outer.write_all(b"more").await.unwrap();
                outer.shutdown().await.unwrap();
                let mut echoed = Vec::new();
                outer.read_to_end(&mut echoed).await.unwrap();
                echoed
            };
            let (joined, echoed) = tokio::join!(
                splice_reach(&local, &mut relay, Duration::from_secs(10), &counters),
                client
            );
            assert_eq!(echoed, b"more");
            assert_eq!(relay_side.await.unwrap(), b"more");
            assert_eq!(joined.unwrap().unwrap(), (3 + 4, 5 + 4));
            assert_eq!(counters.b_to_a.load(Ordering::Relaxed), 5 + 4);
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn splice_reach_returns_a_refusal_and_passes_nothing_back() {
        bounded(async {
            let (mut outer, local) = pair().await;
            let (listener, addr) = fake_relay().await;
            let mut relay = TcpStream::connect(addr).await.unwrap();
            relay.write_all(HEAD).await.unwrap();
            outer.write_all(b"SSH-2.0-x\r\n").await.unwrap();
            tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                read_n(&mut s, HEAD.len()).await;
                let body = r#"{"error":{"code":"not_parked","message":"no hidden server"}}"#;
                let answer = format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(answer.as_bytes()).await.unwrap();
            });
            let counters = Counters::default();
            let err = splice_reach(&local, &mut relay, Duration::from_secs(10), &counters)
                .await
                .unwrap_err();
            let refusal = err.refusal().expect("a refusal");
            assert_eq!((refusal.status, refusal.code.as_str()), (404, "not_parked"));
            drop(local);
            // A FIN, or a reset when the client's bytes were still unread in `local`:
            // either way not a byte.
            let mut got = Vec::new();
            match outer.read_to_end(&mut got).await {
                Ok(_) => {}
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
            }
            assert!(got.is_empty(), "the relay's refusal reached the client: {got:?}");
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn splice_reach_forwards_an_early_half_close_only_after_the_200() {
        bounded(async {
            let (mut outer, local) = pair().await;
            let (listener, addr) = fake_relay().await;
            let mut relay = TcpStream::connect(addr).await.unwrap();
            relay.write_all(HEAD).await.unwrap();
            // The client sends and half-closes before the reach is even answered.
            outer.write_all(b"abc").await.unwrap();
            outer.shutdown().await.unwrap();
            let relay_side = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                assert_eq!(&read_n(&mut s, HEAD.len() + 3).await[HEAD.len()..], b"abc");
                // No EOF while the reach waits for its answer (a relay may take a
                // waiting client's EOF as giving up).
                let mut byte = [0u8; 1];
                let early = tokio::time::timeout(Duration::from_millis(300), s.read(&mut byte));
                assert!(early.await.is_err(), "EOF or bytes before the 200");
                s.write_all(b"HTTP/1.1 200\r\n\r\nok").await.unwrap();
                assert_eq!(s.read(&mut byte).await.unwrap(), 0, "EOF after the 200");
                s.shutdown().await.unwrap();
            });
            let counters = Counters::default();
            let (joined, got) = tokio::join!(
                splice_reach(&local, &mut relay, Duration::from_secs(10), &counters),
                async {
                    let mut v = Vec::new();
                    outer.read_to_end(&mut v).await.unwrap();
                    v
                }
            );
            relay_side.await.unwrap();
            assert_eq!(got, b"ok");
            assert_eq!(joined.unwrap().unwrap(), (3, 2));
        })
        .await;
    }

    #[tokio::test]
    async fn copy_join_moves_bytes_and_counts() {
        let (a, mut outer_a) = tokio::io::duplex(1024);
        let (b, outer_b) = tokio::io::duplex(1024);
        let (mut b_read, mut b_write) = tokio::io::split(outer_b);
        let counters = Counters::default();
        let up = pattern(100_000, 3);
        let (result, _, got) = tokio::join!(
            copy_join(a, b, &counters),
            async {
                outer_a.write_all(&up).await.unwrap();
                outer_a.shutdown().await.unwrap();
                b_write.shutdown().await.unwrap();
            },
            async {
                let mut v = Vec::new();
                b_read.read_to_end(&mut v).await.unwrap();
                v
            }
        );
        assert!(got == up);
        assert_eq!(result.unwrap(), (100_000, 0));
    }
}
