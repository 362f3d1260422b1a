//! Thin wrappers over the raw system calls the driver needs. Every `unsafe` block here
//! passes only descriptors the caller borrows for the call's duration and buffers that
//! live on the caller's stack or heap for that duration; none is retained by the kernel
//! after the call returns.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// `splice(2)` between two descriptors, non-blocking, moving pages where possible.
pub(crate) fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are borrowed for the duration of the call; null offsets
    // mean "current position" (required for sockets and pipes). No memory is passed.
    let ret = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    cvt_size(ret)
}

/// A new non-blocking, close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid, writable array of two ints for the duration of the call.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both entries are fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets a pipe's capacity with `F_SETPIPE_SZ`; returns the capacity the kernel granted.
pub(crate) fn set_pipe_size(fd: BorrowedFd<'_>, size: usize) -> io::Result<usize> {
    let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: fcntl on a borrowed descriptor with an integer argument; no memory passed.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size) }).map(|n| n as usize)
}

/// A pipe's capacity now (`F_GETPIPE_SZ`).
pub(crate) fn pipe_size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY: fcntl on a borrowed descriptor with no argument; no memory passed.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) }).map(|n| n as usize)
}

/// Non-blocking `send(2)` without SIGPIPE.
pub(crate) fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid readable slice for the duration of the call.
    let ret = unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    cvt_size(ret)
}

/// Non-blocking `sendmsg(2)` of several buffers in one call, without SIGPIPE.
pub(crate) fn send_vectored(fd: BorrowedFd<'_>, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    // `IoSlice` is ABI-compatible with `iovec` on Unix; the kernel takes at most IOV_MAX.
    let count = bufs.len().min(1024);
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_ptr().cast_mut().cast();
    msg.msg_iovlen = count;
    // SAFETY: `msg` points at `count` valid, readable buffers borrowed for the duration
    // of the call; the kernel only reads them.
    let ret = unsafe {
        libc::sendmsg(
            fd.as_raw_fd(),
            &msg,
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    cvt_size(ret)
}

/// Non-blocking `recv(2)`.
pub(crate) fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid writable slice for the duration of the call.
    let ret = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    cvt_size(ret)
}

/// `shutdown(fd, SHUT_WR)`: forwards a half-close.
pub(crate) fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: shutdown on a borrowed descriptor; no memory passed.
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) }).map(drop)
}

/// Arms `SO_LINGER {on, 0}` so the next close sends a reset.
pub(crate) fn set_linger_zero(fd: BorrowedFd<'_>) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a valid struct of the size passed, alive for the call.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Sets `TCP_NODELAY` (tunnels carry interactive traffic too).
pub(crate) fn set_nodelay(fd: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid int of the size passed, alive for the call.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Takes ownership of a raw descriptor returned by the kernel (e.g. an accept CQE).
///
/// # Safety
/// `fd` must be a valid open descriptor that nothing else owns or will close.
pub(crate) unsafe fn owned_from_raw(fd: RawFd) -> OwnedFd {
    // SAFETY: forwarded to the caller's contract.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Number of descriptors open in this process (entries of /proc/self/fd). A listing of
/// the whole table: read once at a worker's start, never per turn (the worker counts
/// what it opens and closes itself).
pub(crate) fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1) as u64)
        .unwrap_or(0)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
pub(crate) fn raise_nofile() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok(hard)
}

/// The current soft `RLIMIT_NOFILE`.
pub(crate) fn soft_nofile() -> Option<usize> {
    use nix::sys::resource::{Resource, getrlimit};
    getrlimit(Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft as usize)
}

/// Returns the allocator's free memory to the kernel (`malloc_trim(0)`: glibc releases
/// the free pages in the middle of its heaps too, not only at the top). Called after a
/// large transient allocation, such as parsing the secrets file, whose freed pages would
/// otherwise stay resident in every worker. A no-op on other C libraries.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers and only walks the allocator's own free
    // lists under its lock; it is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd as _;

    /// `Worker::new` sets `TCP_NODELAY` on its listeners and `pair` relies on accepted
    /// sockets inheriting it (Linux copies the listener's TCP options into the child).
    #[test]
    fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let accepted = |nodelay: bool| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            if nodelay {
                set_nodelay(l.as_fd()).unwrap();
            }
            let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept().unwrap();
            s.nodelay().unwrap()
        };
        assert!(accepted(true));
        assert!(!accepted(false), "off unless the listener has it");
    }
}
