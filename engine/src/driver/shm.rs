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
    /// Sockets and pipe ends the worker holds now (what its budget limits), published
    /// for the workers that hand connections to it.
    Held,
    /// The worker's socket budget (its `socket_cap`), published for the same reason.
    Budget,
    /// Hand-offs to this worker that senders have counted against its budget but that
    /// it has not taken from its inbox yet (senders add, the receiver subtracts).
    Inbound,
    /// Hand-offs other workers refused because this worker was at its budget (total).
    HandoffsRefused,
    /// Hand-offs whose descriptor the kernel could not install here (total).
    HandoffsLost,
    /// Cluster-wide claims this worker settled without the supervisor's verdict (its
    /// hand-off full, or no answer before the claim deadline), total.
    ClaimsUnanswered,
    /// Tunnel bytes written to a mesh connection (another node's side of a
    /// cross-node tunnel), total.
    MeshBytesOut,
    /// Tunnel bytes read from a mesh connection and written to this node's side, total.
    MeshBytesIn,
    /// Pipes created smaller than `--pipe-size` because the kernel refused it (total).
    PipesShrunk,
    /// Times the kernel refused a pipe of a useful size, so tunnel directions copied
    /// through user space instead (total; see `pipes.rs`).
    PipeRefusals,
    /// Pipes grown to `--bulk-pipe-size` after a fill filled them (total).
    PipesGrown,
    /// Clients accepted on a listener for one id and put in its owner's room (total).
    FixedReaches,
    /// Tunnels whose two TLS fronts were fused (plaintext passed in memory), total.
    TlsFused,
    /// First of `Rejection::ALL.len()` slots.
    Rejections,
}

const _: () = assert!(Counter::Rejections as usize + Rejection::ALL.len() <= SLOTS);

/// Slots of the relay-wide block that follows the workers' blocks.
#[derive(Debug, Clone, Copy)]
#[repr(usize)]
enum Global {
    /// The owner-hash key, low and high half (written once by the supervisor before the
    /// first worker starts; see [`crate::target::Placement`]).
    OwnerKey0 = 0,
    OwnerKey1,
    /// Hand-offs to the HTTP inbox whose descriptor the supervisor could not install.
    HttpHandoffsLost,
}

/// The mapped region. Lives for the rest of the process once created (never unmapped).
/// Its `Debug` shows neither the counters nor the owner-hash key.
pub(crate) struct SharedStats {
    slots: &'static [AtomicU64],
    workers: usize,
    memfd: OwnedFd,
}

impl std::fmt::Debug for SharedStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStats")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl SharedStats {
    /// Creates a zeroed region for `workers` workers (plus one relay-wide block).
    pub(crate) fn create(workers: usize) -> io::Result<Self> {
        let memfd = nix::sys::memfd::memfd_create(
            c"tryst-stats",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let len = ((workers + 1) * SLOTS * 8) as i64;
        nix::unistd::ftruncate(&memfd, len).map_err(io::Error::from)?;
        Self::map(memfd, workers)
    }

    /// Maps a region created by the supervisor (in a worker).
    pub(crate) fn map(memfd: OwnedFd, workers: usize) -> io::Result<Self> {
        let len = (workers + 1) * SLOTS * 8;
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
            std::slice::from_raw_parts(ptr.cast::<AtomicU64>(), (workers + 1) * SLOTS)
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

    fn global(&self, g: Global) -> &'static AtomicU64 {
        &self.slots[self.workers * SLOTS + g as usize]
    }

    /// Stores the owner-hash key for the workers (supervisor, before spawning).
    pub(crate) fn set_owner_key(&self, key: [u8; 16]) {
        let (a, b) = key.split_at(8);
        let word = |h: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(h);
            u64::from_le_bytes(w)
        };
        self.global(Global::OwnerKey0)
            .store(word(a), Ordering::Relaxed);
        self.global(Global::OwnerKey1)
            .store(word(b), Ordering::Relaxed);
    }

    /// The owner-hash key the supervisor stored (in a worker).
    pub(crate) fn owner_key(&self) -> [u8; 16] {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(
            &self
                .global(Global::OwnerKey0)
                .load(Ordering::Relaxed)
                .to_le_bytes(),
        );
        key[8..].copy_from_slice(
            &self
                .global(Global::OwnerKey1)
                .load(Ordering::Relaxed)
                .to_le_bytes(),
        );
        key
    }

    /// The counter of hand-offs to the HTTP inbox that arrived without their descriptor.
    pub(crate) fn http_lost(&self) -> LostCounter {
        LostCounter(self.global(Global::HttpHandoffsLost))
    }

    /// Hand-offs to the HTTP inbox that arrived without their descriptor (total).
    pub(crate) fn http_handoffs_lost(&self) -> u64 {
        self.global(Global::HttpHandoffsLost)
            .load(Ordering::Relaxed)
    }

    /// One worker's counters.
    pub(crate) fn worker(&self, index: usize) -> WorkerCounters {
        let start = index.min(self.workers.saturating_sub(1)) * SLOTS;
        WorkerCounters {
            slots: &self.slots[start..start + SLOTS],
        }
    }
}

/// One relay-wide counter of lost hand-offs, shareable with the HTTP inbox.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LostCounter(&'static AtomicU64);

impl LostCounter {
    pub(crate) fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
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

    /// Counts one more hand-off in transit to this worker against its budget, unless
    /// what it holds (as last published) plus what is already in transit has reached
    /// the budget. `false`: refuse the connection instead of handing it over.
    ///
    /// Race-tolerant rather than exact: `Held` is published by the receiver after each
    /// socket it adds and once per event-loop turn, so it may lag by what the receiver
    /// took within one turn (pipes, mostly); the compare-and-swap makes concurrent
    /// senders agree on `Inbound`, so they cannot overshoot each other. The receiver
    /// counts `Inbound` against its own accepts too and refuses with 503 whatever still
    /// arrives above its budget, and its descriptor limit keeps headroom above the
    /// budget, so the kernel still has room to install what was sent.
    /// A budget of 0 means "not published yet" (the worker is starting): sending is
    /// allowed and the receiver's own check applies.
    pub(crate) fn reserve_inbound(&self) -> bool {
        let budget = self.get(Counter::Budget);
        let held = self.get(Counter::Held);
        let inbound = &self.slots[Counter::Inbound as usize];
        let mut current = inbound.load(Ordering::Relaxed);
        loop {
            if budget != 0 && held.saturating_add(current) >= budget {
                return false;
            }
            match inbound.compare_exchange_weak(
                current,
                current + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// One hand-off counted by [`Self::reserve_inbound`] arrived (or was never sent).
    /// Saturates at zero: a restarted worker starts from zero while hand-offs sent to
    /// its predecessor may still be queued in its inbox.
    pub(crate) fn release_inbound(&self) {
        let inbound = &self.slots[Counter::Inbound as usize];
        let _ = inbound.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }
    /// Zeroes the gauges (values that describe "now"), keeping the monotonic totals:
    /// called by the supervisor when a worker died, so its last values do not outlive
    /// it, and again before its replacement starts.
    pub(crate) fn reset_gauges(&self) {
        for c in [
            Counter::Parked,
            Counter::Waiting,
            Counter::ActiveTunnels,
            Counter::Sockets,
            Counter::Fds,
            Counter::Pipes,
            Counter::TlsSessions,
            Counter::Held,
            Counter::Budget,
            Counter::Inbound,
        ] {
            self.set(c, 0);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_offs_are_counted_against_the_receivers_budget() {
        let stats = SharedStats::create(2).unwrap();
        let rx = stats.worker(1);
        // Nothing published yet (starting): allowed, the receiver checks on arrival.
        assert!(rx.reserve_inbound());
        rx.release_inbound();
        rx.set(Counter::Budget, 10);
        rx.set(Counter::Held, 7);
        assert!(rx.reserve_inbound());
        assert!(rx.reserve_inbound());
        assert!(rx.reserve_inbound());
        // 7 held + 3 in transit = the budget: the next one is refused.
        assert!(!rx.reserve_inbound());
        assert_eq!(rx.get(Counter::Inbound), 3);
        // One arrives (held + 1, in transit - 1): still full.
        rx.set(Counter::Held, 8);
        rx.release_inbound();
        assert!(!rx.reserve_inbound());
        // A socket closes: room for one.
        rx.set(Counter::Held, 7);
        assert!(rx.reserve_inbound());
        assert!(!rx.reserve_inbound());
        // Releases saturate at zero (a restarted worker starts from zero).
        for _ in 0..10 {
            rx.release_inbound();
        }
        assert_eq!(rx.get(Counter::Inbound), 0);
        // The other worker's block is untouched.
        assert_eq!(stats.worker(0).get(Counter::Inbound), 0);
    }

    #[test]
    fn concurrent_senders_never_overshoot_the_budget() {
        let stats = SharedStats::create(1).unwrap();
        let rx = stats.worker(0);
        rx.set(Counter::Budget, 1000);
        rx.set(Counter::Held, 200);
        let granted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(move || (0..1000).filter(|_| rx.reserve_inbound()).count()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(granted, 800);
        assert_eq!(rx.get(Counter::Inbound), 800);
    }

    #[test]
    fn gauges_reset_and_totals_keep_counting() {
        let stats = SharedStats::create(1).unwrap();
        let c = stats.worker(0);
        c.set(Counter::ActiveTunnels, 5);
        c.set(Counter::Sockets, 12);
        c.add(Counter::Paired, 9);
        c.reject(Rejection::Overloaded);
        c.reset_gauges();
        assert_eq!(c.get(Counter::ActiveTunnels), 0);
        assert_eq!(c.get(Counter::Sockets), 0);
        assert_eq!(c.get(Counter::Paired), 9);
        assert_eq!(c.rejections()[Rejection::Overloaded.index()], 1);
    }

    #[test]
    fn the_owner_key_travels_through_the_mapping() {
        let stats = SharedStats::create(3).unwrap();
        stats.set_owner_key(*b"0123456789abcdef");
        let again = SharedStats::map(stats.memfd().try_clone().unwrap(), 3).unwrap();
        assert_eq!(again.owner_key(), *b"0123456789abcdef");
        assert!(!format!("{again:?}").contains("slots"));
    }
}
