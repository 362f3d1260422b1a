//! Counters shared between the workers and the supervisor: a `memfd` mapped `MAP_SHARED`
//! in every process, one fixed-size block of `AtomicU64` per worker. Workers store, the
//! supervisor loads; no locks, no messages, always current.

use crate::reject::Rejection;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// Counter slots per worker (room to grow without changing the layout).
const SLOTS: usize = 64;

/// Named counters; each is an index into a worker's block.
#[derive(Debug, Clone, Copy)]
#[repr(usize)]
pub(crate) enum Counter {
    Accepted = 0,
    Parked,
    Waiting,
    Paired,
    ActiveTunnels,
    BytesSpliced,
    HandoffsOut,
    HttpHandoffs,
    Sockets,
    Fds,
    Pipes,
    AcceptBackoffs,
    /// TLS sessions open now (incremented and decremented with wrapping adds).
    TlsSessions,
    /// First of `Rejection::ALL.len()` slots.
    Rejections,
}

const _: () = assert!(Counter::Rejections as usize + Rejection::ALL.len() <= SLOTS);

/// The mapped region. Lives for the rest of the process once created (never unmapped).
#[derive(Debug)]
pub(crate) struct SharedStats {
    slots: &'static [AtomicU64],
    workers: usize,
    memfd: OwnedFd,
}

impl SharedStats {
    /// Creates a zeroed region for `workers` workers.
    pub(crate) fn create(workers: usize) -> io::Result<Self> {
        let memfd = nix::sys::memfd::memfd_create(
            c"tryst-stats",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let len = (workers * SLOTS * 8) as i64;
        nix::unistd::ftruncate(&memfd, len).map_err(io::Error::from)?;
        Self::map(memfd, workers)
    }

    /// Maps a region created by the supervisor (in a worker).
    pub(crate) fn map(memfd: OwnedFd, workers: usize) -> io::Result<Self> {
        let len = workers * SLOTS * 8;
        // SAFETY: a fresh shared mapping of `len` bytes of the memfd (sized to at least
        // `len` by the supervisor). The mapping is never unmapped, so the 'static slice
        // below stays valid for the process's life. AtomicU64 has the size and alignment
        // of u64, page alignment satisfies it, and every process only accesses the
        // memory through atomics, so concurrent access across processes is sound.
        let slots = unsafe {
            let ptr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                memfd.as_raw_fd(),
                0,
            );
            if ptr == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            std::slice::from_raw_parts(ptr.cast::<AtomicU64>(), workers * SLOTS)
        };
        Ok(Self {
            slots,
            workers,
            memfd,
        })
    }

    /// The memfd, to pass to a worker.
    pub(crate) fn memfd(&self) -> &OwnedFd {
        &self.memfd
    }

    /// One worker's counters.
    pub(crate) fn worker(&self, index: usize) -> WorkerCounters {
        let start = index.min(self.workers.saturating_sub(1)) * SLOTS;
        WorkerCounters {
            slots: &self.slots[start..start + SLOTS],
        }
    }
}

/// A worker's block of counters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WorkerCounters {
    slots: &'static [AtomicU64],
}

impl WorkerCounters {
    pub(crate) fn get(&self, c: Counter) -> u64 {
        self.slots[c as usize].load(Ordering::Relaxed)
    }
    pub(crate) fn set(&self, c: Counter, v: u64) {
        self.slots[c as usize].store(v, Ordering::Relaxed);
    }
    pub(crate) fn add(&self, c: Counter, v: u64) {
        self.slots[c as usize].fetch_add(v, Ordering::Relaxed);
    }
    pub(crate) fn reject(&self, r: Rejection) {
        self.slots[Counter::Rejections as usize + r.index()].fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn rejections(&self) -> Vec<u64> {
        (0..Rejection::ALL.len())
            .map(|i| self.slots[Counter::Rejections as usize + i].load(Ordering::Relaxed))
            .collect()
    }
}
