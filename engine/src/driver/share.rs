//! What the supervisor prepared for one worker: bytes in a sealed `memfd`, written once
//! by the supervisor and read by the worker, in place of a file every worker would read
//! and parse whole (the relay's secrets: each worker gets only the ids it owns, see
//! [`super::Engine::start_with_shares`]).
//!
//! The supervisor writes the bytes, then seals the memfd against writes, growth and
//! shrinking, and keeps it for replacements of the worker; a reload sends a new one with
//! the reload message. Nothing here is `unsafe`: the descriptors are only read with
//! `pread`, never mapped.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError};

/// Largest share accepted (a file of about a million secrets per worker is ~90 MB).
pub const MAX_SHARE_BYTES: u64 = 1 << 30;

/// A sealed memory file holding `bytes` (close-on-exec).
pub(crate) fn sealed(bytes: &[u8]) -> io::Result<OwnedFd> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MemFdCreateFlag, memfd_create};
    use std::os::fd::AsRawFd;
    let fd = memfd_create(
        c"tryst-share",
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .map_err(io::Error::from)?;
    let mut file = File::from(fd);
    file.write_all(bytes)?;
    fcntl(
        file.as_raw_fd(),
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SEAL
                | SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE,
        ),
    )
    .map_err(io::Error::from)?;
    Ok(OwnedFd::from(file))
}

/// This worker's current share (see the module docs): the one it started with, replaced
/// by the one a reload message brings before the router's `reload` runs. Clones see
/// the same current share, so the router reads what the driver last received.
#[derive(Debug, Clone)]
pub struct ShareFile {
    current: Arc<Mutex<File>>,
}

impl ShareFile {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Self {
            current: Arc::new(Mutex::new(File::from(fd))),
        }
    }

    /// A share holding `bytes`, as the supervisor would give it (for tests and tools).
    pub fn from_bytes(bytes: &[u8]) -> io::Result<Self> {
        sealed(bytes).map(Self::new)
    }

    /// Makes `fd` the current share.
    pub(crate) fn replace(&self, fd: OwnedFd) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = File::from(fd);
    }

    /// The whole current share. Refused above [`MAX_SHARE_BYTES`].
    pub fn read(&self) -> io::Result<Vec<u8>> {
        let file = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let len = file.metadata()?.len();
        if len > MAX_SHARE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the supervisor's share is {len} bytes, above {MAX_SHARE_BYTES}"),
            ));
        }
        let mut bytes = vec![0; usize::try_from(len).map_err(io::Error::other)?];
        file.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_share_reads_back_whole_and_is_sealed_against_writes() {
        let share = ShareFile::from_bytes(b"[secrets]\n").unwrap();
        assert_eq!(share.read().unwrap(), b"[secrets]\n");
        // A second read starts at the beginning again (pread, no shared offset).
        assert_eq!(share.read().unwrap(), b"[secrets]\n");
        let file = share.current.lock().unwrap();
        let fd = file.as_raw_fd();
        let seals = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GET_SEALS).unwrap();
        let want = nix::fcntl::SealFlag::F_SEAL_WRITE | nix::fcntl::SealFlag::F_SEAL_SEAL;
        assert_eq!(seals & want.bits(), want.bits());
        assert!(file.write_at(b"x", 0).is_err(), "sealed against writes");
        assert!(file.set_len(0).is_err(), "sealed against shrinking");
    }

    #[test]
    fn shares_are_made_once_for_every_worker_in_order_or_refused() {
        let placement = crate::target::Placement::new(3, [1; 16]);
        let fds = super::super::Engine::make_shares(
            3,
            placement,
            Box::new(|shares: &[super::super::WorkerShare]| {
                assert_eq!(
                    shares.iter().map(|s| s.index()).collect::<Vec<_>>(),
                    [0, 1, 2]
                );
                Ok(shares
                    .iter()
                    .map(|s| vec![b'0' + s.index() as u8])
                    .collect())
            }),
        )
        .unwrap();
        let read: Vec<Vec<u8>> = fds
            .into_iter()
            .map(|fd| ShareFile::new(fd).read().unwrap())
            .collect();
        assert_eq!(read, [b"0", b"1", b"2"]);
        // A maker that does not give every worker its share changes nothing.
        let err = super::super::Engine::make_shares(3, placement, Box::new(|_| Ok(vec![vec![]])))
            .unwrap_err();
        assert_eq!(err.to_string(), "1 shares made for 3 workers");
    }

    #[test]
    fn a_replaced_share_is_what_every_clone_reads() {
        let share = ShareFile::from_bytes(b"old").unwrap();
        let router_side = share.clone();
        share.replace(sealed(b"new").unwrap());
        assert_eq!(router_side.read().unwrap(), b"new");
        share.replace(sealed(b"").unwrap());
        assert_eq!(router_side.read().unwrap(), b"");
    }
}
