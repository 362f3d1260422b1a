//! One tag table for `/services` and `CONNECT tag:`: the supervisor's end of
//! [`crate::tag::sync`]. The `Rendezvous` service sends what the owner worker's tag table
//! must know ([`TagLink::put`]) and asks it what only the worker can decide
//! ([`TagLink::ask`]: a creation that must not take over a live tunnel tag, a claim on a
//! single-shot tag); the supervisor's loop carries each [`Outgoing`] message to the
//! worker owning the tag and hands the workers' reports back ([`TagLink::on_report`]).

use crate::router::{family_message, split_family_message};
use crate::tag::kdf::HashedTag;
use crate::tag::sync::{Answer, Control, Report, SharedTag};
use crate::tag::table::room_key;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tryst_engine::driver::Engine;

/// How long an RPC call waits for the owner worker's answer (a worker being restarted
/// answers after its replacement starts): then the call fails with `busy`.
pub const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// The family whose workers hold the shared tags.
const SCHEME: &str = "tag:";

/// Messages queued for the supervisor's loop before RPC calls wait for room.
const QUEUE: usize = 4096;

/// A control message for the worker owning `tag` (the family scheme not yet added).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The hashed tag (its room key names the owner worker).
    pub tag: [u8; 32],
    /// The encoded [`Control`].
    pub message: Vec<u8>,
}

/// The link between the `Rendezvous` service and the workers' tag tables.
#[derive(Debug)]
pub struct TagLink {
    tx: mpsc::Sender<Outgoing>,
    next_id: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    /// [`ANSWER_WAIT`] (shorter in tests).
    wait: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl TagLink {
    /// A link and the receiving end the supervisor's loop drains.
    pub fn new() -> (Self, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (
            Self {
                tx,
                next_id: AtomicU64::new(1),
                waiting: Mutex::new(HashMap::new()),
                wait: ANSWER_WAIT,
            },
            rx,
        )
    }

    /// Sends `shared` as the tag's current state and waits up to [`ANSWER_WAIT`] for the
    /// owner worker to apply it ([`Answer::Applied`]); `None` when no answer came (the
    /// update stays queued in order and applies later).
    pub async fn put(&self, shared: SharedTag) -> Option<Answer> {
        self.ask(shared.tag.0, |id| Control::Put { id, shared })
            .await
    }

    /// Sends `shared` as the tag's current state without waiting for an answer.
    pub async fn put_unanswered(&self, shared: SharedTag) {
        let out = Outgoing {
            tag: shared.tag.0,
            message: Control::Put { id: 0, shared }.encode(),
        };
        if self.tx.send(out).await.is_err() {
            tracing::warn!("qredo: the tag link is closed; a tag update is lost");
        }
    }

    /// Sends the control `make(id)` builds for `tag` and waits up to [`ANSWER_WAIT`] for
    /// the owner worker's answer; `None` when none came.
    pub async fn ask(&self, tag: [u8; 32], make: impl FnOnce(u64) -> Control) -> Option<Answer> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(id, tx);
        let out = Outgoing {
            tag,
            message: make(id).encode(),
        };
        let answer = if self.tx.send(out).await.is_ok() {
            tokio::time::timeout(self.wait, rx)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        lock(&self.waiting).remove(&id);
        answer
    }

    /// A worker's report: an answer goes to its waiting call; a consumed tag is
    /// returned for the table to record.
    pub fn on_report(&self, bytes: &[u8]) -> Option<[u8; 32]> {
        match Report::decode(bytes) {
            Ok(Report::Reply { id, answer }) => {
                if let Some(tx) = lock(&self.waiting).remove(&id) {
                    // The call may have given up waiting; that is fine.
                    let _ = tx.send(answer);
                }
                None
            }
            Ok(Report::Consumed { tag }) => Some(tag.0),
            Err(e) => {
                tracing::warn!(error = %e, "qredo: unreadable tag report ignored");
                None
            }
        }
    }
}

/// Control messages the owner worker's full inbox refused, kept in order per relay
/// (bounded: beyond it the oldest is dropped and logged).
const MAX_PENDING: usize = 65_536;

/// The supervisor loop's half of the link: carries [`Outgoing`] messages to the
/// worker owning each tag (in order, retrying those a full inbox refused), re-sends
/// every shared tag to a restarted worker, and hands `tag:` reports to the service.
#[derive(Debug, Default)]
pub struct Courier {
    pending: std::collections::VecDeque<(usize, Vec<u8>)>,
}

impl Courier {
    /// Sends `out` to the worker owning its tag.
    pub fn send(&mut self, engine: &Engine, out: Outgoing) {
        let worker = engine.owner(&room_key(&HashedTag(out.tag)));
        let message = family_message(SCHEME, &out.message);
        self.push(worker, message);
        self.flush(engine);
    }

    fn push(&mut self, worker: usize, message: Vec<u8>) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
            tracing::warn!("qredo: workers' inboxes stay full; the oldest tag update is lost");
        }
        self.pending.push_back((worker, message));
    }

    /// Sends what waits, oldest first, until an inbox is full.
    pub fn flush(&mut self, engine: &Engine) {
        while let Some((worker, message)) = self.pending.front() {
            match engine.send_family_to(*worker, message) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(worker, error = %e, "qredo: a tag update could not be sent; dropped")
                }
            }
            self.pending.pop_front();
        }
    }

    /// After the engine restarted `workers`: each gets the shared tags it owns again.
    pub fn resend(&mut self, engine: &Engine, qredo: &super::Qredo, workers: &[usize]) {
        if workers.is_empty() {
            return;
        }
        for out in qredo.shared_tags(crate::clock::unix_now_ms()) {
            let worker = engine.owner(&room_key(&HashedTag(out.tag)));
            if workers.contains(&worker) {
                self.push(worker, family_message(SCHEME, &out.message));
            }
        }
        self.flush(engine);
    }

    /// Passes the `tag:` reports among `reports` to `qredo`.
    pub fn deliver(qredo: &super::Qredo, reports: Vec<Vec<u8>>) {
        for report in reports {
            if let Some(body) = split_family_message(SCHEME, &report) {
                qredo.on_tag_report(body);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_reaches_its_call_and_silence_times_out() {
        let (mut link, mut rx) = TagLink::new();
        link.wait = Duration::from_millis(20);
        let link = std::sync::Arc::new(link);
        let asking = {
            let link = std::sync::Arc::clone(&link);
            tokio::spawn(async move {
                link.ask([5; 32], |id| Control::Claim {
                    id,
                    tag: HashedTag([5; 32]),
                })
                .await
            })
        };
        let out = rx.recv().await.expect("a message");
        assert_eq!(out.tag, [5; 32]);
        let Ok(Control::Claim { id, .. }) = Control::decode(&out.message) else {
            panic!("not a claim");
        };
        assert_eq!(
            link.on_report(
                &Report::Reply {
                    id,
                    answer: Answer::Claimed
                }
                .encode()
            ),
            None
        );
        assert_eq!(asking.await.unwrap(), Some(Answer::Claimed));
        assert_eq!(
            link.on_report(
                &Report::Consumed {
                    tag: HashedTag([6; 32])
                }
                .encode()
            ),
            Some([6; 32])
        );
        assert_eq!(link.on_report(b"\x09"), None);
        let silent = link.ask([7; 32], |id| Control::Claim {
            id,
            tag: HashedTag([7; 32]),
        });
        assert_eq!(silent.await, None);
        assert!(
            lock(&link.waiting).is_empty(),
            "a given-up call leaves nothing"
        );
    }
}
