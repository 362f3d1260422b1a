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
    events: PipeEvents,
    kernel: K,
}

impl PipePool {
    pub(crate) fn new(max: usize, size: usize) -> Self {
        Self::with_kernel(max, size, SysPipes)
    }
}

impl<K: PipeKernel> PipePool<K> {
    pub(crate) fn with_kernel(max: usize, size: usize, kernel: K) -> Self {
        Self {
            idle: Vec::new(),
            lent: 0,
            max,
            size,
            ask: size,
            refusing: false,
            events: PipeEvents::default(),
            kernel,
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
        }
    }

    /// Forgets a lent pipe that is being closed with its tunnel.
    pub(crate) fn discard(&mut self, pipe: Pipe) {
        self.lent = self.lent.saturating_sub(1);
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
                refused: 0
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
                shrunk: 0,
                refused: 1
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
}
