//! A bounded pool of pipes, held by a tunnel direction only while bytes are in flight
//! (HAProxy's model). A pipe is returned only when empty; a pipe that cannot be emptied
//! stays with its direction and is closed with it.
//!
//! The kernel may refuse the configured size: an unprivileged user is capped by
//! `fs.pipe-max-size`, and once the user's pipes hold more than
//! `fs.pipe-user-pages-soft` pages every new pipe gets 2 pages (8 KiB) and cannot be
//! grown. The pool then degrades instead of failing: it asks for halves of the size down
//! to [`MIN_USEFUL`] (counted as *shrunk*), and when even that is refused, or the pipe
//! cannot be created at all, it lends nothing (counted as *refused*) and the direction
//! copies through user space. After a refusal no pipe is created until [`PipePool::retry`]
//! (once a second), so a refusing kernel costs one attempt per second, not one per chunk.

use super::sys;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Smallest pipe worth splicing through: the kernel's default pipe (16 pages). The
/// copy path moves 64 KiB per `recv`, so an 8 KiB pipe would cost more calls per byte.
pub(crate) const MIN_USEFUL: usize = 64 * 1024;

/// Most idle pipes kept for reuse; the rest are closed to give their fds back.
const MAX_IDLE: usize = 32;

/// A pipe: read end, write end.
#[derive(Debug)]
pub(crate) struct Pipe {
    pub(crate) read: OwnedFd,
    pub(crate) write: OwnedFd,
    /// Capacity granted by the kernel.
    pub(crate) capacity: usize,
}

/// The calls the pool makes, behind a trait so its fallbacks are tested with a kernel
/// that refuses.
pub(crate) trait PipeKernel {
    /// A new non-blocking pipe: (read end, write end).
    fn pipe(&mut self) -> io::Result<(OwnedFd, OwnedFd)>;
    /// `F_SETPIPE_SZ`: the capacity granted.
    fn set_size(&mut self, fd: BorrowedFd<'_>, size: usize) -> io::Result<usize>;
    /// `F_GETPIPE_SZ`: the capacity now.
    fn size(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize>;
}

/// The real system calls.
#[derive(Debug, Default)]
pub(crate) struct SysPipes;

impl PipeKernel for SysPipes {
    fn pipe(&mut self) -> io::Result<(OwnedFd, OwnedFd)> {
        sys::pipe()
    }
    fn set_size(&mut self, fd: BorrowedFd<'_>, size: usize) -> io::Result<usize> {
        sys::set_pipe_size(fd, size)
    }
    fn size(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        sys::pipe_size(fd)
    }
}

/// What the kernel refused since the last [`PipePool::take_events`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PipeEvents {
    /// Pipes created smaller than the configured size because the kernel refused it.
    pub(crate) shrunk: u64,
    /// Pipes the kernel would not create, or not at [`MIN_USEFUL`]: the direction that
    /// asked copied through user space instead.
    pub(crate) refused: u64,
    /// Pipes grown to the bulk size after a fill filled them.
    pub(crate) grown: u64,
}

/// Per-worker pool of idle pipes plus a count of pipes lent out.
#[derive(Debug)]
pub(crate) struct PipePool<K = SysPipes> {
    idle: Vec<Pipe>,
    lent: usize,
    max: usize,
    /// The configured size (`--pipe-size`).
    size: usize,
    /// The size asked for first: `size`, or the last size the kernel granted after
    /// refusing more (reset by [`Self::retry`]).
    ask: usize,
    /// The kernel refused a useful pipe: create none until [`Self::retry`].
    refusing: bool,
    /// Capacity a pipe that a fill filled is grown to ([`Self::grow`]); at or below
    /// `size`, pipes are never grown.
    bulk_size: usize,
    /// Pipes now larger than `size` (lent or idle), at most `max_grown`.
    grown: usize,
    max_grown: usize,
    /// The kernel refused to grow a pipe: grow none until [`Self::retry`].
    growth_refused: bool,
    events: PipeEvents,
    kernel: K,
}

impl PipePool {
    pub(crate) fn new(max: usize, size: usize) -> Self {
        Self::with_kernel(max, size, SysPipes)
    }
}

/// At most one pipe in this many may be grown to the bulk size: with the defaults, 64
/// of a worker's 1,024 pipes, so grown pipes at most double the pages its pool can hold
/// against `fs.pipe-user-pages-soft` (64 x 1 MiB against 1,024 x 256 KiB).
pub(crate) const GROWN_SHARE: usize = 16;

impl<K: PipeKernel> PipePool<K> {
    pub(crate) fn with_kernel(max: usize, size: usize, kernel: K) -> Self {
        Self {
            idle: Vec::new(),
            lent: 0,
            max,
            size,
            ask: size,
            refusing: false,
            bulk_size: size,
            grown: 0,
            max_grown: max.div_ceil(GROWN_SHARE),
            growth_refused: false,
            events: PipeEvents::default(),
            kernel,
        }
    }

    /// Pipes that a fill filled are grown to `bulk_size` (see [`Self::grow`]).
    pub(crate) fn with_bulk_size(mut self, bulk_size: usize) -> Self {
        self.bulk_size = bulk_size;
        self
    }

    /// A fill filled `pipe`: the stream has more waiting than the pipe holds, so it is
    /// grown to the bulk size (each wake-up then moves up to 4x more at the defaults),
    /// while fewer than `max_grown` pipes are grown and the kernel allows it. Growing
    /// never moves or drops the bytes in the pipe. A grown pipe keeps its size until it
    /// is closed.
    pub(crate) fn grow(&mut self, pipe: &mut Pipe) {
        if pipe.capacity >= self.bulk_size
            || self.bulk_size <= self.size
            || self.grown >= self.max_grown
            || self.growth_refused
        {
            return;
        }
        match self.kernel.set_size(pipe.write.as_fd(), self.bulk_size) {
            Ok(granted) if granted > pipe.capacity => {
                if pipe.capacity <= self.size && granted > self.size {
                    self.grown += 1;
                }
                pipe.capacity = granted;
                self.events.grown += 1;
            }
            Ok(_) => {}
            // Over `fs.pipe-max-size` or the user's pipe pages: try again after the retry.
            Err(_) => self.growth_refused = true,
        }
    }

    /// Forgets a pipe being closed: it no longer counts as grown.
    fn closing(&mut self, pipe: &Pipe) {
        if pipe.capacity > self.size {
            self.grown = self.grown.saturating_sub(1);
        }
    }

    /// An empty pipe, or `None` when the pool is at its cap or the kernel refuses
    /// pipes (the caller falls back to copying).
    pub(crate) fn get(&mut self) -> Option<Pipe> {
        if let Some(p) = self.idle.pop() {
            self.lent += 1;
            return Some(p);
        }
        if self.lent >= self.max || self.refusing {
            return None;
        }
        let Some(pipe) = self.create() else {
            self.refusing = true;
            self.events.refused += 1;
            return None;
        };
        self.lent += 1;
        Some(pipe)
    }

    /// A new pipe of the largest size the kernel grants from `ask` down to
    /// [`MIN_USEFUL`] (halving), or `None` if it grants less.
    fn create(&mut self) -> Option<Pipe> {
        let (read, write) = self.kernel.pipe().ok()?;
        let floor = MIN_USEFUL.min(self.size);
        let mut ask = self.ask;
        let capacity = loop {
            match self.kernel.set_size(write.as_fd(), ask) {
                Ok(granted) => break granted,
                Err(_) if ask / 2 >= floor => ask /= 2,
                // Not even the floor: whatever the pipe has (8 KiB over the soft limit).
                Err(_) => break self.kernel.size(write.as_fd()).unwrap_or(0),
            }
        };
        if capacity < floor {
            return None;
        }
        if capacity < self.size {
            self.events.shrunk += 1;
            self.ask = ask;
        }
        Some(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// Asks for the configured size again and lifts a refusal (once a second: the
    /// operator may have raised the sysctl, or the user's other pipes were closed).
    pub(crate) fn retry(&mut self) {
        self.ask = self.size;
        self.refusing = false;
        self.growth_refused = false;
    }

    /// What the kernel refused since the last call.
    pub(crate) fn take_events(&mut self) -> PipeEvents {
        std::mem::take(&mut self.events)
    }

    /// Returns an empty pipe to the pool.
    pub(crate) fn put(&mut self, pipe: Pipe) {
        self.lent = self.lent.saturating_sub(1);
        // Keep a few idle pipes for reuse; close the rest to give fds back.
        if self.idle.len() < MAX_IDLE {
            self.idle.push(pipe);
        } else {
            self.closing(&pipe);
        }
    }

    /// Forgets a lent pipe that is being closed with its tunnel.
    pub(crate) fn discard(&mut self, pipe: Pipe) {
        self.lent = self.lent.saturating_sub(1);
        self.closing(&pipe);
        drop(pipe);
    }

    /// Pipes lent out plus idle ones (each is two fds).
    pub(crate) fn held(&self) -> usize {
        self.lent + self.idle.len()
    }
}

impl Pipe {
    #[allow(dead_code)]
    pub(crate) fn fill_from(&self, src: BorrowedFd<'_>) -> io::Result<usize> {
        sys::splice(src, self.write.as_fd(), self.capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real pipes whose resizing follows a rule: sizes above `max_size` are refused
    /// (`fs.pipe-max-size` for an unprivileged user); with `over_soft_limit` every pipe
    /// has 8 KiB and cannot grow (`fs.pipe-user-pages-soft` exceeded); `no_pipes`
    /// refuses creation (`fs.pipe-user-pages-hard`, or no descriptors left).
    #[derive(Debug, Default)]
    struct Refusing {
        max_size: usize,
        over_soft_limit: bool,
        no_pipes: bool,
        asked: Vec<usize>,
    }

    impl PipeKernel for Refusing {
        fn pipe(&mut self) -> io::Result<(OwnedFd, OwnedFd)> {
            if self.no_pipes {
                return Err(io::Error::from_raw_os_error(libc::ENFILE));
            }
            sys::pipe()
        }
        fn set_size(&mut self, fd: BorrowedFd<'_>, size: usize) -> io::Result<usize> {
            self.asked.push(size);
            if self.over_soft_limit || size > self.max_size {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            sys::set_pipe_size(fd, size)
        }
        fn size(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
            if self.over_soft_limit {
                return Ok(8 * 1024);
            }
            sys::pipe_size(fd)
        }
    }

    fn pool(kernel: Refusing) -> PipePool<Refusing> {
        PipePool::with_kernel(8, 1 << 20, kernel)
    }

    #[test]
    fn a_granted_size_is_used_as_is() {
        let mut p = pool(Refusing {
            max_size: usize::MAX,
            ..Default::default()
        });
        let pipe = p.get().unwrap();
        assert_eq!(pipe.capacity, 1 << 20);
        assert_eq!(p.take_events(), PipeEvents::default());
        assert_eq!(p.kernel.asked, [1 << 20]);
    }

    #[test]
    fn a_refused_size_falls_back_to_halves_and_is_remembered_until_retry() {
        let mut p = pool(Refusing {
            max_size: 256 * 1024,
            ..Default::default()
        });
        let first = p.get().unwrap();
        assert_eq!(first.capacity, 256 * 1024);
        assert_eq!(p.kernel.asked, [1 << 20, 512 * 1024, 256 * 1024]);
        // The next pipe asks for the size that worked, once.
        let second = p.get().unwrap();
        assert_eq!(second.capacity, 256 * 1024);
        assert_eq!(p.kernel.asked.len(), 4);
        assert_eq!(
            p.take_events(),
            PipeEvents {
                shrunk: 2,
                ..PipeEvents::default()
            }
        );
        assert_eq!(p.take_events(), PipeEvents::default());
        p.retry();
        let third = p.get().unwrap();
        assert_eq!(third.capacity, 256 * 1024);
        assert_eq!(&p.kernel.asked[4..], [1 << 20, 512 * 1024, 256 * 1024]);
        assert_eq!(p.held(), 3);
    }

    #[test]
    fn below_the_useful_size_no_pipe_is_lent_until_retry() {
        let mut p = pool(Refusing {
            max_size: usize::MAX,
            over_soft_limit: true,
            ..Default::default()
        });
        assert!(p.get().is_none());
        // 1 MiB, 512, 256, 128 and 64 KiB were asked, then the pool stopped asking.
        assert_eq!(
            p.kernel.asked,
            [1 << 20, 512 * 1024, 256 * 1024, 128 * 1024, 64 * 1024]
        );
        assert!(p.get().is_none());
        assert!(p.get().is_none());
        assert_eq!(p.kernel.asked.len(), 5, "a refusing kernel is asked once");
        assert_eq!(
            p.take_events(),
            PipeEvents {
                refused: 1,
                ..PipeEvents::default()
            }
        );
        assert_eq!(p.held(), 0, "the refused pipe was closed");
        // The operator raises the limit: the next retry lends pipes again.
        p.kernel.over_soft_limit = false;
        p.retry();
        assert_eq!(p.get().unwrap().capacity, 1 << 20);
    }

    #[test]
    fn a_pipe_that_cannot_be_created_is_refused_once_until_retry() {
        let mut p = pool(Refusing {
            max_size: usize::MAX,
            no_pipes: true,
            ..Default::default()
        });
        assert!(p.get().is_none());
        assert!(p.get().is_none());
        assert_eq!(p.take_events().refused, 1);
        p.kernel.no_pipes = false;
        p.retry();
        assert!(p.get().is_some());
    }

    #[test]
    fn idle_pipes_are_lent_even_while_the_kernel_refuses() {
        let mut p = pool(Refusing {
            max_size: usize::MAX,
            ..Default::default()
        });
        let pipe = p.get().unwrap();
        p.put(pipe);
        p.kernel.no_pipes = true;
        assert!(p.get().is_some(), "the idle pipe");
        assert!(p.get().is_none());
        assert_eq!(p.take_events().refused, 1);
    }

    #[test]
    fn a_configured_size_below_the_floor_is_not_refused() {
        let mut p = PipePool::with_kernel(
            8,
            16 * 1024,
            Refusing {
                max_size: usize::MAX,
                ..Default::default()
            },
        );
        assert_eq!(p.get().unwrap().capacity, 16 * 1024);
        assert_eq!(p.take_events(), PipeEvents::default());
    }

    #[test]
    fn the_cap_holds() {
        let mut p = PipePool::with_kernel(
            2,
            64 * 1024,
            Refusing {
                max_size: usize::MAX,
                ..Default::default()
            },
        );
        let (a, b) = (p.get().unwrap(), p.get().unwrap());
        assert!(p.get().is_none());
        assert_eq!(
            p.take_events(),
            PipeEvents::default(),
            "the cap is no refusal"
        );
        p.put(a);
        assert!(p.get().is_some());
        p.discard(b);
        assert_eq!(p.held(), 1);
    }

    fn growing_pool(max: usize, kernel: Refusing) -> PipePool<Refusing> {
        PipePool::with_kernel(max, 256 * 1024, kernel).with_bulk_size(1 << 20)
    }

    #[test]
    fn a_filled_pipe_grows_to_the_bulk_size_once_and_within_the_share() {
        // 32 pipes: at most 2 grown.
        let mut p = growing_pool(
            32,
            Refusing {
                max_size: usize::MAX,
                ..Default::default()
            },
        );
        let mut pipes: Vec<Pipe> = (0..3).map(|_| p.get().unwrap()).collect();
        p.kernel.asked.clear();
        for pipe in &mut pipes {
            p.grow(pipe);
        }
        let sizes: Vec<usize> = pipes.iter().map(|p| p.capacity).collect();
        assert_eq!(sizes, [1 << 20, 1 << 20, 256 * 1024]);
        assert_eq!(p.kernel.asked, [1 << 20, 1 << 20], "the third is not asked");
        p.grow(&mut pipes[0]);
        assert_eq!(p.kernel.asked.len(), 2, "a grown pipe is not grown again");
        assert_eq!(p.take_events().grown, 2);
        // A grown pipe closed with its tunnel makes room for another.
        let closed = pipes.remove(0);
        p.discard(closed);
        p.grow(&mut pipes[1]);
        assert_eq!(pipes[1].capacity, 1 << 20);
        // A grown pipe returned to the pool stays grown and still counts.
        let returned = pipes.remove(1);
        p.put(returned);
        let fresh = p.get().unwrap();
        assert_eq!(fresh.capacity, 1 << 20, "the idle grown pipe is lent again");
        p.put(fresh);
        let _idle_grown = p.get().unwrap();
        let mut new = p.get().unwrap();
        p.grow(&mut new);
        assert_eq!(
            new.capacity,
            256 * 1024,
            "two are grown (one lent, one idle): the share is full"
        );
    }

    #[test]
    fn growth_the_kernel_refuses_is_not_asked_again_until_retry() {
        let mut p = growing_pool(
            32,
            Refusing {
                max_size: 256 * 1024,
                ..Default::default()
            },
        );
        let mut pipe = p.get().unwrap();
        p.kernel.asked.clear();
        p.grow(&mut pipe);
        p.grow(&mut pipe);
        assert_eq!(p.kernel.asked, [1 << 20], "refused once, then not asked");
        assert_eq!(pipe.capacity, 256 * 1024);
        assert_eq!(p.take_events(), PipeEvents::default());
        p.kernel.max_size = usize::MAX;
        p.retry();
        p.grow(&mut pipe);
        assert_eq!(pipe.capacity, 1 << 20);
    }

    #[test]
    fn without_a_larger_bulk_size_nothing_grows() {
        let mut p = PipePool::with_kernel(
            32,
            256 * 1024,
            Refusing {
                max_size: usize::MAX,
                ..Default::default()
            },
        );
        let mut pipe = p.get().unwrap();
        p.kernel.asked.clear();
        p.grow(&mut pipe);
        assert!(p.kernel.asked.is_empty());
        assert_eq!(pipe.capacity, 256 * 1024);
    }

    #[test]
    fn grown_pipes_closed_for_want_of_idle_room_are_uncounted() {
        let mut p = growing_pool(
            64,
            Refusing {
                max_size: usize::MAX,
                ..Default::default()
            },
        );
        let mut lent: Vec<Pipe> = (0..MAX_IDLE + 4).map(|_| p.get().unwrap()).collect();
        for pipe in &mut lent {
            p.grow(pipe);
        }
        assert_eq!(p.grown, 4, "64 pipes: a share of 4");
        // The grown ones go back last, when the idle list is full: they are closed.
        lent.reverse();
        for pipe in lent {
            p.put(pipe);
        }
        assert_eq!(p.grown, 0);
        assert_eq!(p.held(), MAX_IDLE);
    }

    /// The kernel behaviour growing relies on: `F_SETPIPE_SZ` on a pipe with bytes in
    /// it keeps them, in order, and the new room takes more.
    #[test]
    fn a_pipe_grown_with_bytes_in_it_keeps_them() {
        let mut p = growing_pool(
            32,
            Refusing {
                max_size: usize::MAX,
                ..Default::default()
            },
        );
        let mut pipe = p.get().unwrap();
        let first: Vec<u8> = (0..pipe.capacity).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            write_all_now(&pipe, &first),
            first.len(),
            "the pipe is full"
        );
        p.grow(&mut pipe);
        assert_eq!(pipe.capacity, 1 << 20);
        let more = vec![0x5a; 512 * 1024];
        assert_eq!(write_all_now(&pipe, &more), more.len());
        let mut back = vec![0u8; first.len() + more.len()];
        let mut got = 0;
        while got < back.len() {
            let n = read_some(&pipe, &mut back[got..]);
            assert!(n > 0);
            got += n;
        }
        assert_eq!(&back[..first.len()], &first[..]);
        assert!(back[first.len()..].iter().all(|&b| b == 0x5a));
    }

    /// Writes as much of `data` as the pipe takes without blocking.
    fn write_all_now(pipe: &Pipe, data: &[u8]) -> usize {
        let mut file = std::fs::File::from(pipe.write.try_clone().unwrap());
        let mut done = 0;
        while done < data.len() {
            match io::Write::write(&mut file, &data[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        done
    }

    fn read_some(pipe: &Pipe, buf: &mut [u8]) -> usize {
        let mut file = std::fs::File::from(pipe.read.try_clone().unwrap());
        io::Read::read(&mut file, buf).unwrap()
    }
}
