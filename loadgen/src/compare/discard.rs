//! The sink's bulk reads without copies (`--bulk-sink splice`, the default): what
//! arrives is spliced into a pipe and from the pipe into `/dev/null`, counted, and never
//! enters user space. On a machine where the generator and the sink share a CPU, the
//! copy a `read` makes is what kept that CPU saturated while the relay under test idled
//! at half a CPU (docs/performance.md); without it the relay sets the rate.
//!
//! Only the sink: a generator that `vmsplice`s its pattern sends skbs of 4 KiB user
//! pages, which took every relay about twice the CPU per GB (a pipe slot holds one
//! fragment, so a splice moved 8x fewer bytes than from the kernel's 32 KiB fragments
//! of a copied `write`); real clients `write`, so the generator does too.
//!
//! Plain TCP only; the calls are `nix`'s, so there is no `unsafe` here.

use nix::fcntl::{SpliceFFlags, splice};
use std::io;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipe size asked for (`F_SETPIPE_SZ`).
const PIPE_SIZE: usize = 256 * 1024;

/// Reads `s` to its end without copying; returns the bytes it carried.
pub(super) async fn drain(s: &TcpStream) -> io::Result<u64> {
    let (read, write, capacity) = tryst_client::pump::sized_pipe(PIPE_SIZE)?;
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    let mut count = 0u64;
    loop {
        s.readable().await?;
        let filled = s.try_io(Interest::READABLE, || {
            let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
            splice(s, None, &write, None, capacity, flags).map_err(io::Error::from)
        });
        match filled {
            Ok(0) => return Ok(count),
            Ok(n) => {
                count += n as u64;
                // Emptied before the next fill, so a WouldBlock from the fill is the
                // socket's (try_io then clears its readiness), never the pipe's.
                let mut left = n;
                while left > 0 {
                    left -= splice(&read, None, &null, None, left, SpliceFFlags::SPLICE_F_MOVE)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn drain_counts_every_byte_to_the_end() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let sender = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let block = vec![7u8; 100_003];
            for _ in 0..50 {
                s.write_all(&block).await.unwrap();
            }
            s.shutdown().await.unwrap();
        });
        let (s, _) = l.accept().await.unwrap();
        assert_eq!(drain(&s).await.unwrap(), 50 * 100_003);
        sender.await.unwrap();
    }

    #[tokio::test]
    async fn drain_of_a_connection_closed_at_once_counts_nothing() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(TcpStream::connect(addr).await.unwrap());
        let (s, _) = l.accept().await.unwrap();
        assert_eq!(drain(&s).await.unwrap(), 0);
    }
}
