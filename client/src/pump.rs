//! Moving a tunnel's bytes both ways.
//!
//! - [`splice_join`]: two TCP sockets joined with `splice(2)` through one pipe pair per
//!   direction (Linux): payload never enters user space. Readiness comes from tokio;
//!   the calls are `nix::fcntl::splice`, so there is no `unsafe` here.
//! - [`copy_join`]: any two async streams (TLS, stdin/stdout) through one fixed
//!   [`COPY_BUFFER`] per direction.
//!
//! Both forward a half-close (EOF on one side becomes `shutdown(SHUT_WR)` on the other,
//! the opposite direction keeps flowing), count bytes as they move, and on an error in
//! either direction stop both (TCP sockets are closed with a reset so the peer learns).

use nix::fcntl::{SpliceFFlags, splice};
use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, Interest};
use tokio::net::TcpStream;

/// Bytes per direction of [`copy_join`]'s buffer.
pub const COPY_BUFFER: usize = 64 * 1024;
/// Most bytes asked of one `splice(2)` call (the default pipe capacity).
pub const SPLICE_CHUNK: usize = 64 * 1024;

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
    let result = tokio::try_join!(
        splice_direction(a, b, &counters.a_to_b),
        splice_direction(b, a, &counters.b_to_a)
    );
    if result.is_err() {
        reset(a);
        reset(b);
    }
    result
}

/// Makes the coming close a reset (`SO_LINGER` 0), so the peer sees the failure.
pub fn reset(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(std::time::Duration::ZERO));
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(io::Error::from)
}

/// One direction: socket → pipe → socket. The pipe is always emptied before the next
/// fill, so a `WouldBlock` from a splice always means the socket is not ready, never the
/// pipe; tokio's readiness is cleared only then.
async fn splice_direction(from: &TcpStream, to: &TcpStream, count: &AtomicU64) -> io::Result<u64> {
    let (pipe_r, pipe_w) = pipe()?;
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let mut total = 0u64;
    loop {
        let filled = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                splice(from, None, &pipe_w, None, SPLICE_CHUNK, flags).map_err(io::Error::from)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        };
        if filled == 0 {
            // EOF: forward the half-close; the other direction carries on.
            let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
            return Ok(total);
        }
        let mut in_pipe = filled;
        while in_pipe > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(&pipe_r, None, to, None, in_pipe, flags).map_err(io::Error::from)
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
    }
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
    async fn splice_moves_bytes_both_ways_and_forwards_half_close() {
        // outer_a <-> a  [splice]  b <-> outer_b
        let (mut outer_a, a) = pair().await;
        let (b, mut outer_b) = pair().await;
        let counters = std::sync::Arc::new(Counters::default());
        let c = counters.clone();
        let joined = tokio::spawn(async move { splice_join(&a, &b, &c).await });
        let up = pattern(3 << 20, 1);
        let down = pattern(2 << 20, 2);
        let (up2, down2) = (up.clone(), down.clone());
        let (mut ar, mut aw) = outer_a.split();
        let (mut br, mut bw) = outer_b.split();
        let (got_up, got_down, _, _) = tokio::join!(
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
                aw.write_all(&up2).await.unwrap();
                aw.shutdown().await.unwrap();
            },
            async {
                bw.write_all(&down2).await.unwrap();
                bw.shutdown().await.unwrap();
            }
        );
        assert!(got_up == up, "a->b differs");
        assert!(got_down == down, "b->a differs");
        let (ab, ba) = joined.await.unwrap().unwrap();
        assert_eq!((ab, ba), (3 << 20, 2 << 20));
        assert_eq!(counters.a_to_b.load(Ordering::Relaxed), 3 << 20);
        drop((outer_a.shutdown().await, outer_b.shutdown().await));
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
