//! The group-commit writer's request queue: bounded, many senders, one receiver, and it
//! wakes the receiver only when there is a reason to look.
//!
//! A standard channel wakes a blocked receiver on every send. The writer, gathering the
//! callers of its last commit, only wants to know when all of them are back (or when its
//! wait runs out), so with a channel each batch of `C` requests cost it `C` wake-ups and
//! context switches on the path every request waits on. Here the receiver says how many
//! queued items it waits for, and a send wakes it only when the queue reaches that
//! count: one wake-up per batch.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Why [`Sender::try_send`] gave the item back.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TrySendError<T> {
    /// The queue holds its capacity.
    Full(T),
    /// The receiver is gone.
    Disconnected(T),
}

/// Why a wait for an item ended without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RecvError {
    /// The deadline passed.
    Timeout,
    /// Every sender is gone and nothing is queued.
    Disconnected,
}

struct State<T> {
    items: VecDeque<T>,
    /// The receiver sleeps until this many items are queued (0: it is not waiting).
    wake_at: usize,
    senders: usize,
    receiver_gone: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    capacity: usize,
}

/// The queue's bound only: the items (requests with their payloads) are not printed.
impl<T> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // The state stays consistent under every panic (no invariant spans an await
        // or a user call), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A bounded queue holding at most `capacity` items (at least one).
pub(super) fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            wake_at: 0,
            senders: 1,
            receiver_gone: false,
        }),
        ready: Condvar::new(),
        capacity: capacity.max(1),
    });
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared },
    )
}

/// The sending side; cloning adds a sender.
#[derive(Debug)]
pub(super) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        if state.senders == 0 {
            drop(state);
            self.shared.ready.notify_one();
        }
    }
}

impl<T> Sender<T> {
    /// Queues `item` without blocking; wakes the receiver if it waits for this many.
    pub(super) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = self.shared.lock();
        if state.receiver_gone {
            return Err(TrySendError::Disconnected(item));
        }
        if state.items.len() >= self.shared.capacity {
            return Err(TrySendError::Full(item));
        }
        state.items.push_back(item);
        if state.wake_at != 0 && state.items.len() >= state.wake_at {
            state.wake_at = 0;
            drop(state);
            self.shared.ready.notify_one();
        }
        Ok(())
    }
}

/// The receiving side (one).
#[derive(Debug)]
pub(super) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let queued = {
            let mut state = self.shared.lock();
            state.receiver_gone = true;
            std::mem::take(&mut state.items)
        };
        // Queued items (and the reply channels in them) go now, outside the lock: their
        // senders learn it instead of waiting for an answer that cannot come.
        drop(queued);
    }
}

impl<T> Receiver<T> {
    /// Waits until at least `count` items are queued (at most the capacity: a full
    /// queue ends the wait) or `deadline` passes; returns how many are queued.
    /// `Disconnected` only when nothing is queued and no sender is left (with items
    /// queued it returns them first).
    pub(super) fn wait_for(&self, count: usize, deadline: Instant) -> Result<usize, RecvError> {
        let count = count.clamp(1, self.shared.capacity);
        let mut state = self.shared.lock();
        loop {
            let queued = state.items.len();
            if queued >= count {
                return Ok(queued);
            }
            if state.senders == 0 {
                return if queued > 0 {
                    Ok(queued)
                } else {
                    Err(RecvError::Disconnected)
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return if queued > 0 {
                    Ok(queued)
                } else {
                    Err(RecvError::Timeout)
                };
            }
            state.wake_at = count;
            state = self
                .shared
                .ready
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.wake_at = 0;
        }
    }

    /// Moves up to `max` queued items, oldest first, into `out` (never blocks).
    pub(super) fn drain_into(&self, out: &mut Vec<T>, max: usize) {
        let mut state = self.shared.lock();
        let n = state.items.len().min(max);
        out.extend(state.items.drain(..n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(20)
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn a_full_queue_gives_the_item_back_and_a_gone_receiver_refuses() {
        let (tx, rx) = bounded(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        let mut out = Vec::new();
        rx.drain_into(&mut out, 1);
        assert_eq!(out, [1]);
        tx.try_send(3).unwrap();
        rx.drain_into(&mut out, 10);
        assert_eq!(out, [1, 2, 3]);
        drop(rx);
        assert_eq!(tx.try_send(4), Err(TrySendError::Disconnected(4)));
    }

    #[test]
    fn a_wait_ends_at_its_count_at_its_deadline_or_when_the_senders_are_gone() {
        let (tx, rx) = bounded(8);
        assert_eq!(rx.wait_for(1, soon()), Err(RecvError::Timeout));
        tx.try_send(1).unwrap();
        assert_eq!(rx.wait_for(1, later()), Ok(1));
        // Fewer than asked for when the deadline passes: what is there.
        assert_eq!(rx.wait_for(3, soon()), Ok(1));
        let sender = {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 2..=3 {
                    tx.try_send(i).unwrap();
                }
            })
        };
        assert_eq!(rx.wait_for(3, later()), Ok(3));
        sender.join().unwrap();
        drop(tx);
        // Every sender gone: what is queued first, then Disconnected.
        assert_eq!(rx.wait_for(5, later()), Ok(3));
        let mut out = Vec::new();
        rx.drain_into(&mut out, 10);
        assert_eq!(out, [1, 2, 3]);
        assert_eq!(rx.wait_for(1, later()), Err(RecvError::Disconnected));
    }

    #[test]
    fn a_wait_for_more_than_the_capacity_ends_when_the_queue_is_full() {
        let (tx, rx) = bounded(2);
        let sender = std::thread::spawn(move || {
            tx.try_send(1).unwrap();
            tx.try_send(2).unwrap();
            tx
        });
        assert_eq!(rx.wait_for(5, later()), Ok(2));
        drop(sender.join().unwrap());
    }

    #[test]
    fn the_last_sender_dropped_wakes_a_waiting_receiver() {
        let (tx, rx) = bounded::<u8>(8);
        let waiter = std::thread::spawn(move || rx.wait_for(1, later()));
        drop(tx);
        assert_eq!(waiter.join().unwrap(), Err(RecvError::Disconnected));
    }

    /// Many senders, one receiver gathering batches: nothing lost, nothing twice, and
    /// no wait outlives its deadline when fewer items come than it asked for.
    #[test]
    fn concurrent_senders_lose_nothing() {
        let (tx, rx) = bounded(64);
        let senders: Vec<_> = (0..4u32)
            .map(|t| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..500u32 {
                        let mut item = t * 1000 + i;
                        loop {
                            match tx.try_send(item) {
                                Ok(()) => break,
                                Err(TrySendError::Full(back)) => {
                                    item = back;
                                    std::thread::yield_now();
                                }
                                Err(TrySendError::Disconnected(_)) => panic!("receiver gone"),
                            }
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let mut got = Vec::new();
        loop {
            match rx.wait_for(8, Instant::now() + Duration::from_millis(5)) {
                Ok(_) => rx.drain_into(&mut got, 16),
                Err(RecvError::Timeout) => {}
                Err(RecvError::Disconnected) => break,
            }
        }
        for s in senders {
            s.join().unwrap();
        }
        got.sort_unstable();
        let want: Vec<u32> = (0..4u32)
            .flat_map(|t| (0..500).map(move |i| t * 1000 + i))
            .collect();
        assert_eq!(got, want);
    }
}
