//! A bounded pool of pipes, held by a tunnel direction only while bytes are in flight
//! (HAProxy's model). A pipe is returned only when empty; a pipe that cannot be emptied
//! stays with its direction and is closed with it.

use super::sys;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// A pipe: read end, write end.
#[derive(Debug)]
pub(crate) struct Pipe {
    pub(crate) read: OwnedFd,
    pub(crate) write: OwnedFd,
    /// Capacity granted by the kernel.
    pub(crate) capacity: usize,
}

/// Per-worker pool of idle pipes plus a count of pipes lent out.
#[derive(Debug)]
pub(crate) struct PipePool {
    idle: Vec<Pipe>,
    lent: usize,
    max: usize,
    size: usize,
}

impl PipePool {
    pub(crate) fn new(max: usize, size: usize) -> Self {
        Self {
            idle: Vec::new(),
            lent: 0,
            max,
            size,
        }
    }

    /// An empty pipe, or `None` when the pool is at its cap (caller falls back to copy).
    pub(crate) fn get(&mut self) -> Option<Pipe> {
        if let Some(p) = self.idle.pop() {
            self.lent += 1;
            return Some(p);
        }
        if self.lent >= self.max {
            return None;
        }
        let (read, write) = sys::pipe().ok()?;
        let capacity = sys::set_pipe_size(write.as_fd(), self.size)
            .or_else(|_| sys::set_pipe_size(write.as_fd(), 64 * 1024))
            .unwrap_or(64 * 1024);
        self.lent += 1;
        Some(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// Returns an empty pipe to the pool.
    pub(crate) fn put(&mut self, pipe: Pipe) {
        self.lent = self.lent.saturating_sub(1);
        // Keep a few idle pipes for reuse; close the rest to give fds back.
        if self.idle.len() < 32 {
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
    pub(crate) fn fill_from(&self, src: std::os::fd::BorrowedFd<'_>) -> io::Result<usize> {
        sys::splice(src, self.write.as_fd(), self.capacity)
    }
}
