//! The dead-drop's durable store: the [`Store`] trait, its redb implementation (the
//! PostgreSQL one is in [`super::pg`]), the [`Reader`] for read-only queries outside the
//! writer, and the group-commit writer that funnels every change through one thread.
//!
//! redb is an embedded, pure-Rust, copy-on-write B-tree store with ACID transactions;
//! a transaction committed with `Durability::Immediate` (the default) is fsynced
//! before `commit` returns, and a crash at any point leaves the last committed state.
//! The writer batches whatever requests are queued into one transaction, so concurrent
//! deposits share one fsync, and each caller is answered only after that commit.
//!
//! Layout (all keys big-endian so byte order is numeric order):
//! - `messages`: seq (u64) → mailbox (32) ‖ expires (u64) ‖ id length (u8) ‖ id ‖ payload
//! - `by_mailbox`: mailbox ‖ seq → () (a mailbox's messages, oldest first)
//! - `by_expiry`: expires ‖ seq → () (expiry without scanning mailboxes)
//! - `ids`: deposit id → seq (for `/ack`)
//! - `pending`: mailbox → count
//! - `meta`: `next_seq`, `bytes`, `mailboxes`

use super::queue::{Receiver, RecvError, Sender, TrySendError};
use redb::{Database, ReadableTable as _, ReadableTableMetadata as _, TableDefinition};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

const MESSAGES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("messages");
const BY_MAILBOX: TableDefinition<'_, &[u8], ()> = TableDefinition::new("by_mailbox");
const BY_EXPIRY: TableDefinition<'_, &[u8], ()> = TableDefinition::new("by_expiry");
const IDS: TableDefinition<'_, &str, u64> = TableDefinition::new("ids");
const PENDING: TableDefinition<'_, &[u8], u64> = TableDefinition::new("pending");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// Bytes a message is charged beyond its payload and id (index entries, header).
pub const OVERHEAD_BYTES: u64 = 128;
/// Most requests folded into one transaction.
pub const MAX_BATCH: usize = 512;

/// A mailbox: SHA-256 of the recipient's PEM string.
pub type Mailbox = [u8; 32];

/// Caps the store enforces inside the transaction that would exceed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Most undelivered messages per mailbox.
    pub max_pending: u64,
    /// Most mailboxes holding messages.
    pub max_mailboxes: u64,
    /// Most bytes charged for stored messages (payload + id + [`OVERHEAD_BYTES`]).
    pub max_bytes: u64,
}

/// A message to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Where it goes.
    pub mailbox: Mailbox,
    /// Its id (a UUID string).
    pub deposit_id: String,
    /// The payload string, verbatim.
    pub payload: String,
    /// Unix seconds after which it is gone.
    pub expires_at: u64,
}

/// A stored message handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Its id.
    pub deposit_id: String,
    /// The payload string, verbatim.
    pub payload: String,
}

/// One change or read, applied in order inside a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Store a message (subject to the caps).
    Deposit(NewMessage),
    /// The live messages of a mailbox, oldest first; deleted when `delete`.
    Take {
        /// Which mailbox.
        mailbox: Mailbox,
        /// Unix seconds (expired messages are not returned).
        now: u64,
        /// Delete what is returned (upstream's delete-on-read).
        delete: bool,
    },
    /// Delete the named messages of a mailbox (ids of other mailboxes are ignored).
    Ack {
        /// Which mailbox.
        mailbox: Mailbox,
        /// The deposit ids.
        ids: Vec<String>,
    },
    /// Delete every message expired at `now`, through the expiry index.
    Expire {
        /// Unix seconds.
        now: u64,
    },
}

/// A cap that refused a deposit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The mailbox holds `max_pending` messages.
    Mailbox,
    /// `max_mailboxes` mailboxes exist.
    Mailboxes,
    /// The store would exceed `max_bytes`.
    Bytes,
}

/// The outcome of one [`Op`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored (durable once the batch's commit returned).
    Deposited,
    /// Refused by a cap; nothing stored.
    Refused(Full),
    /// Messages of a `Take`.
    Messages(Vec<Delivered>),
    /// How many messages an `Ack` or `Expire` removed.
    Removed(usize),
}

/// Why the store failed; the whole batch failed with it (nothing of it committed).
#[derive(Debug, Clone, thiserror::Error)]
#[error("store: {message}")]
pub struct StoreError {
    /// What happened.
    pub message: String,
    /// The database server cannot be reached right now (answered 503, retried by
    /// clients); otherwise the store itself failed (500).
    pub unavailable: bool,
}

impl StoreError {
    /// A failure of the store itself.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unavailable: false,
        }
    }

    /// The database server cannot be reached.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unavailable: true,
        }
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::failed(e.to_string())
}

/// Durable mail storage. `apply` runs a batch as one atomic, durable transaction and
/// returns one outcome per op, in order. Implemented by [`RedbStore`] (the default, an
/// embedded file) and [`super::pg::PgStore`] (PostgreSQL, shared by several nodes);
/// both pass the same tests (`store::tests`, `relay/tests/it/deaddrop.rs`).
///
/// Semantics every implementation keeps: caps are checked inside the transaction that
/// would exceed them; a deposit whose id is already stored is answered `Deposited`
/// without a second copy (an idempotent retry); `Take` returns live messages oldest
/// first and deletes expired ones it meets; `Expire` removes at most
/// [`EXPIRE_BATCH`] messages through an expiry index.
pub trait Store: Send + 'static {
    /// Applies `ops` atomically and durably.
    fn apply(&mut self, ops: &[Op]) -> Result<Vec<Outcome>, StoreError>;

    /// Called after `apply` failed: make the store usable again if possible.
    fn recover(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// A handle for read-only queries that need no write transaction and do not queue
    /// behind the writer.
    fn reader(&self) -> Reader;
}

/// Most messages one `Expire` removes (the rest wait for the next sweep).
pub const EXPIRE_BATCH: usize = 10_000;

/// Read-only queries against a store, from any task. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Reader {
    /// The redb file.
    Redb(RedbReader),
    /// PostgreSQL.
    Postgres(super::pg::PgAccess),
}

impl Reader {
    /// Whether `mailbox` holds a message live at `now` (a retrieve of an empty mailbox
    /// is answered from this, without a write transaction).
    pub async fn has_live(&self, mailbox: &Mailbox, now: u64) -> Result<bool, StoreError> {
        match self {
            Self::Redb(r) => r.has_live(mailbox, now),
            Self::Postgres(r) => r.has_live(mailbox, now).await,
        }
    }
}

type Opener = Box<dyn Fn() -> Result<Database, StoreError> + Send>;
type Shared = Arc<Mutex<Option<Arc<Database>>>>;

/// The redb-backed [`Store`].
pub struct RedbStore {
    db: Option<Arc<Database>>,
    shared: Shared,
    opener: Opener,
    limits: StoreLimits,
}

/// Read transactions on the redb file (readers do not block the writer, nor it them,
/// except while a commit grows the file: see [`crate::redb_file`]).
#[derive(Clone)]
pub struct RedbReader {
    shared: Shared,
}

impl std::fmt::Debug for RedbReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbReader").finish_non_exhaustive()
    }
}

impl RedbReader {
    fn has_live(&self, mailbox: &Mailbox, now: u64) -> Result<bool, StoreError> {
        let db = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| StoreError::failed("store closed after an I/O error"))?;
        let txn = db.begin_read().map_err(err)?;
        let by_mailbox = txn.open_table(BY_MAILBOX).map_err(err)?;
        let messages = txn.open_table(MESSAGES).map_err(err)?;
        let (lo, hi) = (cat(mailbox, 0), cat(mailbox, u64::MAX));
        for entry in by_mailbox
            .range(lo.as_slice()..=hi.as_slice())
            .map_err(err)?
        {
            let (k, _) = entry.map_err(err)?;
            let seq = u64_at(k.value(), 32)?;
            if let Some(raw) = messages.get(seq).map_err(err)?
                && decode(raw.value())?.1 > now
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("open", &self.db.is_some())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (creating if needed) the database at `path`, recovering after a crash.
    pub fn open(path: &Path, limits: StoreLimits) -> Result<Self, StoreError> {
        let path = path.to_owned();
        Self::init(
            Box::new(move || crate::redb_file::create(&path).map_err(err)),
            limits,
        )
    }

    /// Opens (creating if needed) a database over the backends `make` returns (tests
    /// inject I/O faults); `make` is called again to reopen after an I/O error.
    pub fn with_backend<B, F>(make: F, limits: StoreLimits) -> Result<Self, StoreError>
    where
        B: redb::StorageBackend,
        F: Fn() -> B + Send + 'static,
    {
        Self::init(
            Box::new(move || Database::builder().create_with_backend(make()).map_err(err)),
            limits,
        )
    }

    fn init(opener: Opener, limits: StoreLimits) -> Result<Self, StoreError> {
        let db = Arc::new(opener()?);
        let txn = db.begin_write().map_err(err)?;
        {
            txn.open_table(MESSAGES).map_err(err)?;
            txn.open_table(BY_MAILBOX).map_err(err)?;
            txn.open_table(BY_EXPIRY).map_err(err)?;
            txn.open_table(IDS).map_err(err)?;
            txn.open_table(PENDING).map_err(err)?;
            txn.open_table(META).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        Ok(Self {
            shared: Arc::new(Mutex::new(Some(Arc::clone(&db)))),
            db: Some(db),
            opener,
            limits,
        })
    }
}

fn encode(m: &NewMessage) -> Vec<u8> {
    let id = m.deposit_id.as_bytes();
    let mut v = Vec::with_capacity(32 + 8 + 1 + id.len() + m.payload.len());
    v.extend_from_slice(&m.mailbox);
    v.extend_from_slice(&m.expires_at.to_be_bytes());
    v.push(id.len().min(255) as u8);
    v.extend_from_slice(&id[..id.len().min(255)]);
    v.extend_from_slice(m.payload.as_bytes());
    v
}

fn decode(v: &[u8]) -> Result<(Mailbox, u64, String, String), StoreError> {
    let bad = || StoreError::failed("corrupt message record");
    let mailbox: Mailbox = v.get(..32).ok_or_else(bad)?.try_into().map_err(|_| bad())?;
    let exp = u64::from_be_bytes(
        v.get(32..40)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    let n = usize::from(*v.get(40).ok_or_else(bad)?);
    let id = std::str::from_utf8(v.get(41..41 + n).ok_or_else(bad)?).map_err(|_| bad())?;
    let payload = std::str::from_utf8(v.get(41 + n..).ok_or_else(bad)?).map_err(|_| bad())?;
    Ok((mailbox, exp, id.to_owned(), payload.to_owned()))
}

fn cat(a: &[u8], b: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 8);
    k.extend_from_slice(a);
    k.extend_from_slice(&b.to_be_bytes());
    k
}

/// The big-endian `u64` at byte `at` of an index key (a `by_mailbox` key's sequence
/// number at 32, a `by_expiry` key's at 8); a key too short is a corrupt store.
fn u64_at(key: &[u8], at: usize) -> Result<u64, StoreError> {
    key.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::failed("corrupt index entry"))
}

fn charge(id: &str, payload: &str) -> u64 {
    (id.len() + payload.len()) as u64 + OVERHEAD_BYTES
}

struct Tables<'t> {
    messages: redb::Table<'t, u64, &'static [u8]>,
    by_mailbox: redb::Table<'t, &'static [u8], ()>,
    by_expiry: redb::Table<'t, &'static [u8], ()>,
    ids: redb::Table<'t, &'static str, u64>,
    pending: redb::Table<'t, &'static [u8], u64>,
    meta: redb::Table<'t, &'static str, u64>,
    /// The `meta` counters, read once per transaction and written back before commit.
    totals: Totals,
}

/// The `meta` table's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Totals {
    next_seq: u64,
    bytes: u64,
    mailboxes: u64,
}

impl Tables<'_> {
    fn read_totals(meta: &redb::Table<'_, &'static str, u64>) -> Result<Totals, StoreError> {
        let get = |k: &str| -> Result<u64, StoreError> {
            Ok(meta.get(k).map_err(err)?.map_or(0, |v| v.value()))
        };
        Ok(Totals {
            next_seq: get("next_seq")?,
            bytes: get("bytes")?,
            mailboxes: get("mailboxes")?,
        })
    }

    /// Writes the counters back if the batch changed them.
    fn write_totals(&mut self, before: Totals) -> Result<(), StoreError> {
        let now = self.totals;
        for (k, old, new) in [
            ("next_seq", before.next_seq, now.next_seq),
            ("bytes", before.bytes, now.bytes),
            ("mailboxes", before.mailboxes, now.mailboxes),
        ] {
            if old != new {
                self.meta.insert(k, new).map_err(err)?;
            }
        }
        Ok(())
    }

    /// Removes message `seq`'s record and its `by_expiry` and `ids` entries and
    /// uncharges its bytes, returning what it held (`None`: no such message). The
    /// caller removes its `by_mailbox` entry and counts it out of `pending`.
    fn remove_record(
        &mut self,
        seq: u64,
    ) -> Result<Option<(Mailbox, u64, String, String)>, StoreError> {
        let Some(raw) = self.messages.remove(seq).map_err(err)? else {
            return Ok(None);
        };
        let record = decode(raw.value())?;
        drop(raw);
        let (_, exp, id, payload) = &record;
        self.by_expiry
            .remove(cat(&exp.to_be_bytes(), seq).as_slice())
            .map_err(err)?;
        self.ids.remove(id.as_str()).map_err(err)?;
        self.totals.bytes = self.totals.bytes.saturating_sub(charge(id, payload));
        Ok(Some(record))
    }

    /// Lowers `mailbox`'s pending count by `removed`, dropping the entry (and the
    /// mailbox from the total) at zero.
    fn uncount(&mut self, mailbox: &Mailbox, removed: u64) -> Result<(), StoreError> {
        if removed == 0 {
            return Ok(());
        }
        let left = self
            .pending
            .get(mailbox.as_slice())
            .map_err(err)?
            .map_or(0, |v| v.value())
            .saturating_sub(removed);
        if left == 0 {
            self.pending.remove(mailbox.as_slice()).map_err(err)?;
            self.totals.mailboxes = self.totals.mailboxes.saturating_sub(1);
        } else {
            self.pending.insert(mailbox.as_slice(), left).map_err(err)?;
        }
        Ok(())
    }

    /// Removes message `seq` and its index entries; true if it existed.
    fn remove(&mut self, seq: u64) -> Result<bool, StoreError> {
        let Some((mailbox, ..)) = self.remove_record(seq)? else {
            return Ok(false);
        };
        self.by_mailbox
            .remove(cat(&mailbox, seq).as_slice())
            .map_err(err)?;
        self.uncount(&mailbox, 1)?;
        Ok(true)
    }

    fn deposit(&mut self, m: &NewMessage, limits: &StoreLimits) -> Result<Outcome, StoreError> {
        if self.ids.get(m.deposit_id.as_str()).map_err(err)?.is_some() {
            // Already stored (a retried deposit): acknowledged again, not stored twice.
            return Ok(Outcome::Deposited);
        }
        let count = self
            .pending
            .get(m.mailbox.as_slice())
            .map_err(err)?
            .map_or(0, |v| v.value());
        if count >= limits.max_pending {
            return Ok(Outcome::Refused(Full::Mailbox));
        }
        let mailboxes = self.totals.mailboxes;
        if count == 0 && mailboxes >= limits.max_mailboxes {
            return Ok(Outcome::Refused(Full::Mailboxes));
        }
        let bytes = self.totals.bytes;
        let cost = charge(&m.deposit_id, &m.payload);
        if bytes.saturating_add(cost) > limits.max_bytes {
            return Ok(Outcome::Refused(Full::Bytes));
        }
        let seq = self.totals.next_seq;
        self.totals.next_seq = seq + 1;
        self.messages
            .insert(seq, encode(m).as_slice())
            .map_err(err)?;
        self.by_mailbox
            .insert(cat(&m.mailbox, seq).as_slice(), ())
            .map_err(err)?;
        self.by_expiry
            .insert(cat(&m.expires_at.to_be_bytes(), seq).as_slice(), ())
            .map_err(err)?;
        self.ids.insert(m.deposit_id.as_str(), seq).map_err(err)?;
        self.pending
            .insert(m.mailbox.as_slice(), count + 1)
            .map_err(err)?;
        if count == 0 {
            self.totals.mailboxes = mailboxes + 1;
        }
        self.totals.bytes = bytes + cost;
        Ok(Outcome::Deposited)
    }

    /// The sequence numbers of `mailbox`'s messages, in deposit order (its
    /// `by_mailbox` range).
    fn mailbox_seqs(&self, mailbox: &Mailbox) -> Result<Vec<u64>, StoreError> {
        let (lo, hi) = (cat(mailbox, 0), cat(mailbox, u64::MAX));
        let mut seqs = Vec::new();
        for entry in self
            .by_mailbox
            .range(lo.as_slice()..=hi.as_slice())
            .map_err(err)?
        {
            let (k, _) = entry.map_err(err)?;
            seqs.push(u64_at(k.value(), 32)?);
        }
        Ok(seqs)
    }

    fn take(&mut self, mailbox: &Mailbox, now: u64, delete: bool) -> Result<Outcome, StoreError> {
        if delete {
            return self.take_and_delete(mailbox, now);
        }
        let seqs = self.mailbox_seqs(mailbox)?;
        let mut out = Vec::with_capacity(seqs.len());
        let mut expired = Vec::new();
        for seq in seqs {
            let Some(raw) = self.messages.get(seq).map_err(err)? else {
                continue;
            };
            let (_, exp, deposit_id, payload) = decode(raw.value())?;
            if exp <= now {
                expired.push(seq);
            } else {
                out.push(Delivered {
                    deposit_id,
                    payload,
                });
            }
        }
        for seq in expired {
            self.remove(seq)?;
        }
        Ok(Outcome::Messages(out))
    }

    /// Delete-on-read: empties `mailbox` (each record read once, as it is removed, and
    /// its `pending` count written once) and hands out the live messages in deposit
    /// order; the expired ones go with them, undelivered.
    fn take_and_delete(&mut self, mailbox: &Mailbox, now: u64) -> Result<Outcome, StoreError> {
        let seqs = self.mailbox_seqs(mailbox)?;
        let mut out = Vec::with_capacity(seqs.len());
        let mut removed = 0;
        for seq in seqs {
            // (redb's `extract_from_if` would save this lookup but copies every page it
            // touches: 70 ms instead of 30 for 2000 messages.)
            self.by_mailbox
                .remove(cat(mailbox, seq).as_slice())
                .map_err(err)?;
            let Some((_, exp, deposit_id, payload)) = self.remove_record(seq)? else {
                continue;
            };
            removed += 1;
            if exp > now {
                out.push(Delivered {
                    deposit_id,
                    payload,
                });
            }
        }
        self.uncount(mailbox, removed)?;
        Ok(Outcome::Messages(out))
    }

    fn ack(&mut self, mailbox: &Mailbox, ids: &[String]) -> Result<Outcome, StoreError> {
        let mut removed = 0;
        for id in ids {
            let Some(seq) = self.ids.get(id.as_str()).map_err(err)?.map(|v| v.value()) else {
                continue;
            };
            let owner = self
                .by_mailbox
                .get(cat(mailbox, seq).as_slice())
                .map_err(err)?
                .is_some();
            if owner && self.remove(seq)? {
                removed += 1;
            }
        }
        Ok(Outcome::Removed(removed))
    }

    fn expire(&mut self, now: u64) -> Result<Outcome, StoreError> {
        let hi = cat(&now.to_be_bytes(), u64::MAX);
        let mut seqs = Vec::new();
        for entry in self.by_expiry.range(..=hi.as_slice()).map_err(err)? {
            let (k, _) = entry.map_err(err)?;
            seqs.push(u64_at(k.value(), 8)?);
            if seqs.len() >= EXPIRE_BATCH {
                break;
            }
        }
        let mut removed = 0;
        for seq in seqs {
            if self.remove(seq)? {
                removed += 1;
            }
        }
        Ok(Outcome::Removed(removed))
    }
}

impl Store for RedbStore {
    fn apply(&mut self, ops: &[Op]) -> Result<Vec<Outcome>, StoreError> {
        let db = self
            .db
            .as_ref()
            .ok_or_else(|| StoreError::failed("store closed after an I/O error"))?;
        let txn = db.begin_write().map_err(err)?;
        let mut out = Vec::with_capacity(ops.len());
        {
            let meta = txn.open_table(META).map_err(err)?;
            let before = Tables::read_totals(&meta)?;
            let mut t = Tables {
                messages: txn.open_table(MESSAGES).map_err(err)?,
                by_mailbox: txn.open_table(BY_MAILBOX).map_err(err)?,
                by_expiry: txn.open_table(BY_EXPIRY).map_err(err)?,
                ids: txn.open_table(IDS).map_err(err)?,
                pending: txn.open_table(PENDING).map_err(err)?,
                meta,
                totals: before,
            };
            for op in ops {
                out.push(match op {
                    Op::Deposit(m) => t.deposit(m, &self.limits)?,
                    Op::Take {
                        mailbox,
                        now,
                        delete,
                    } => t.take(mailbox, *now, *delete)?,
                    Op::Ack { mailbox, ids } => t.ack(mailbox, ids)?,
                    Op::Expire { now } => t.expire(*now)?,
                });
            }
            t.write_totals(before)?;
            debug_assert_eq!(
                t.messages.len().unwrap_or(0),
                t.by_expiry.len().unwrap_or(0)
            );
        }
        txn.commit().map_err(err)?;
        Ok(out)
    }

    fn recover(&mut self) -> Result<(), StoreError> {
        // redb refuses every transaction after an I/O error until the database is
        // closed and reopened; reopening recovers the last committed state. A reader
        // still inside a read transaction keeps the old handle (and the file lock) a
        // moment longer: then this fails and the next failed batch tries again.
        *self.lock_shared() = None;
        self.db = None;
        let db = Arc::new((self.opener)()?);
        *self.lock_shared() = Some(Arc::clone(&db));
        self.db = Some(db);
        Ok(())
    }

    fn reader(&self) -> Reader {
        Reader::Redb(RedbReader {
            shared: Arc::clone(&self.shared),
        })
    }
}

impl RedbStore {
    fn lock_shared(&self) -> std::sync::MutexGuard<'_, Option<Arc<Database>>> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<S: Store + ?Sized> Store for Box<S> {
    fn apply(&mut self, ops: &[Op]) -> Result<Vec<Outcome>, StoreError> {
        (**self).apply(ops)
    }

    fn recover(&mut self) -> Result<(), StoreError> {
        (**self).recover()
    }

    fn reader(&self) -> Reader {
        (**self).reader()
    }
}

type Reply = oneshot::Sender<Result<Outcome, WriteError>>;

/// Upper bounds of the batch-size histogram's buckets (requests per transaction).
pub const BATCH_SIZE_BUCKETS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];
/// Upper bounds of the commit-time histogram's buckets, microseconds.
pub const COMMIT_MICROS_BUCKETS: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];
/// Longest the writer waits for the callers of its last commit before the next one.
pub const MAX_GATHER: std::time::Duration = std::time::Duration::from_millis(2);

/// A histogram with fixed buckets, written by the writer thread, read by `/metrics`.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// Per bucket (not cumulative); the last one counts values above every bound.
    counts: Vec<AtomicU64>,
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    fn record(&self, v: u64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Sum of the observed values.
    pub fn sum(&self) -> u64 {
        self.sum.load(Ordering::Relaxed)
    }

    /// `(upper bound, cumulative count)` per bucket, then `(None, count)` for `+Inf`.
    pub fn cumulative(&self) -> Vec<(Option<u64>, u64)> {
        let mut acc = 0;
        self.counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                acc += c.load(Ordering::Relaxed);
                (self.bounds.get(i).copied(), acc)
            })
            .collect()
    }
}

/// What the writer thread did, for `/metrics`: how well group commit batches.
#[derive(Debug)]
pub struct WriterStats {
    /// Requests per committed or failed batch (the expiry sweep not counted).
    pub batch_size: Histogram,
    /// Time a batch took in [`Store::apply`] (transaction and commit), microseconds.
    pub commit_micros: Histogram,
    /// Time spent waiting for more requests before a batch (see [`Writer::spawn`]),
    /// microseconds in all.
    pub gather_micros: AtomicU64,
}

impl Default for WriterStats {
    fn default() -> Self {
        Self {
            batch_size: Histogram::new(&BATCH_SIZE_BUCKETS),
            commit_micros: Histogram::new(&COMMIT_MICROS_BUCKETS),
            gather_micros: AtomicU64::new(0),
        }
    }
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The handle to the group-commit writer thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: Sender<(Op, Reply)>,
    stats: Arc<WriterStats>,
}

/// Why the writer could not take a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The queue is full (back-pressure).
    #[error("store queue full")]
    Busy,
    /// The store failed (the batch was not committed).
    #[error("{0}")]
    Failed(String),
    /// The database server cannot be reached (the batch was not committed).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        if e.unavailable {
            Self::Unavailable(e.message)
        } else {
            Self::Failed(e.message)
        }
    }
}

/// Moves whatever is queued into the batch, up to [`MAX_BATCH`] requests.
fn drain(rx: &Receiver<(Op, Reply)>, ops: &mut Vec<Op>, replies: &mut Vec<Option<Reply>>) {
    let mut queued = Vec::new();
    rx.drain_into(&mut queued, MAX_BATCH.saturating_sub(ops.len()));
    for (op, reply) in queued {
        ops.push(op);
        replies.push(Some(reply));
    }
}

impl Writer {
    /// Starts the writer thread over `store`; it sweeps expired messages every
    /// `sweep_every` while idle, taking the time from `clock` (Unix seconds).
    ///
    /// Group commit: a batch is everything queued when the writer takes it, so requests
    /// that arrive during a commit share the next one. Clients wait for their answer
    /// before they send again, so with `C` busy clients the batches would alternate
    /// between those answered by one commit and those queued behind it, each request
    /// waiting for two commits. So before a batch the writer waits, for at most the
    /// last commit's duration (and [`MAX_GATHER`]), until as many requests are queued as
    /// the last batch held plus those that queued behind it: the callers it just
    /// answered coming back. A lone client (nothing queued behind its commit) never
    /// waits.
    pub fn spawn<S: Store>(
        store: S,
        queue: usize,
        sweep_every: std::time::Duration,
        clock: fn() -> u64,
    ) -> Self {
        Self::spawn_gathering(store, queue, sweep_every, clock, |last| {
            last.min(MAX_GATHER)
        })
    }

    /// [`Writer::spawn`] with the longest wait for returning callers given by `window`
    /// from the last commit's duration (tests choose one that cannot run out).
    pub fn spawn_gathering<S: Store>(
        mut store: S,
        queue: usize,
        sweep_every: std::time::Duration,
        clock: fn() -> u64,
        window: fn(std::time::Duration) -> std::time::Duration,
    ) -> Self {
        use std::time::{Duration, Instant};
        let (tx, rx) = super::queue::bounded::<(Op, Reply)>(queue);
        let stats = Arc::new(WriterStats::default());
        let run = {
            let stats = Arc::clone(&stats);
            move || {
                let mut last_sweep = Instant::now();
                let mut ops: Vec<Op> = Vec::new();
                let mut replies: Vec<Option<Reply>> = Vec::new();
                // Requests expected in the next batch, and how long the last commit took.
                let mut expect = 0;
                let mut last_commit = Duration::ZERO;
                loop {
                    if ops.is_empty() {
                        match rx.wait_for(1, Instant::now() + sweep_every) {
                            Ok(_) | Err(RecvError::Timeout) => {}
                            Err(RecvError::Disconnected) => return,
                        }
                    }
                    drain(&rx, &mut ops, &mut replies);
                    let want = expect.min(MAX_BATCH);
                    if !ops.is_empty() && ops.len() < want {
                        // One wake-up when the last of them is queued, not one per caller.
                        let start = Instant::now();
                        let _ = rx.wait_for(want - ops.len(), start + window(last_commit));
                        drain(&rx, &mut ops, &mut replies);
                        stats
                            .gather_micros
                            .fetch_add(micros(start.elapsed()), Ordering::Relaxed);
                    }
                    let requests = ops.len();
                    if last_sweep.elapsed() >= sweep_every {
                        ops.push(Op::Expire { now: clock() });
                        replies.push(None);
                        last_sweep = Instant::now();
                    }
                    if ops.is_empty() {
                        continue;
                    }
                    let started = Instant::now();
                    let result = store.apply(&ops);
                    last_commit = started.elapsed();
                    stats.commit_micros.record(micros(last_commit));
                    if requests > 0 {
                        stats.batch_size.record(requests as u64);
                    }
                    // What queued during the commit, taken before anyone is answered: not
                    // this batch's callers, who will come back too.
                    let mut next_ops = Vec::new();
                    let mut next_replies = Vec::new();
                    drain(&rx, &mut next_ops, &mut next_replies);
                    expect = requests + next_ops.len();
                    match result {
                        Ok(outcomes) => {
                            for (reply, outcome) in replies.drain(..).zip(outcomes) {
                                if let Some(reply) = reply {
                                    let _ = reply.send(Ok(outcome));
                                }
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, batch = ops.len(), "dead-drop store batch failed");
                            for reply in replies.drain(..).flatten() {
                                let _ = reply.send(Err(WriteError::from(e.clone())));
                            }
                            if let Err(e) = store.recover() {
                                tracing::error!(error = %e, "dead-drop store cannot be reopened");
                            }
                        }
                    }
                    ops = next_ops;
                    replies = next_replies;
                }
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("tryst-deaddrop".into())
            .spawn(run)
        {
            tracing::error!(error = %e, "cannot start the dead-drop writer");
        }
        Self { tx, stats }
    }

    /// What the writer thread did so far.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Queues `op`; the receiver gets the outcome of the commit that includes it.
    fn enqueue(
        &self,
        op: Op,
    ) -> Result<oneshot::Receiver<Result<Outcome, WriteError>>, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx.try_send((op, reply)).map_err(|e| match e {
            TrySendError::Full(_) => WriteError::Busy,
            TrySendError::Disconnected(_) => WriteError::Failed("store writer stopped".into()),
        })?;
        Ok(answer)
    }

    /// Queues `op` and waits for the commit that includes it.
    pub async fn submit(&self, op: Op) -> Result<Outcome, WriteError> {
        match self.enqueue(op)?.await {
            Ok(Ok(o)) => Ok(o),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(WriteError::Failed("store writer stopped".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    const LIMITS: StoreLimits = StoreLimits {
        max_pending: 3,
        max_mailboxes: 2,
        max_bytes: 1 << 20,
    };

    fn msg(mb: u8, id: &str, payload: &str, exp: u64) -> Op {
        Op::Deposit(NewMessage {
            mailbox: [mb; 32],
            deposit_id: id.into(),
            payload: payload.into(),
            expires_at: exp,
        })
    }

    /// Where a test's stores live: redb files in a temporary directory, or databases on
    /// the PostgreSQL test cluster (`TRYST_TEST_PG`, set by scripts/test.sh). Each
    /// shared test below runs once per kind (`<test>::redb`, `<test>::postgres`).
    enum Place {
        Redb(tempfile::TempDir),
        Postgres(std::cell::RefCell<std::collections::HashMap<String, String>>),
    }

    const TEST_KEY: &str = include_str!("../../tests/fixtures/deaddrop/client-key.pem");

    impl Place {
        fn redb() -> Self {
            Self::Redb(tempfile::tempdir().unwrap())
        }

        /// `None` (and a loud SKIPPED line) without a test cluster.
        fn postgres(test: &str) -> Option<Self> {
            if std::env::var_os(crate::deaddrop::pg::testing::SOCKET_ENV).is_none() {
                eprintln!(
                    "\n*** SKIPPED {test}::postgres: TRYST_TEST_PG is not set \
                     (./scripts/test.sh starts a PostgreSQL cluster and sets it) ***\n"
                );
                return None;
            }
            Some(Self::Postgres(Default::default()))
        }

        /// The store called `name` (the same one again when reopened).
        fn open(&self, name: &str, limits: StoreLimits) -> Box<dyn Store> {
            match self {
                Self::Redb(dir) => Box::new(
                    RedbStore::open(&dir.path().join(format!("{name}.redb")), limits).unwrap(),
                ),
                Self::Postgres(dbs) => {
                    let url = dbs
                        .borrow_mut()
                        .entry(name.to_owned())
                        .or_insert_with(|| {
                            crate::deaddrop::pg::testing::fresh_database()
                                .expect("TRYST_TEST_PG is set but its cluster is unusable")
                                .expect("TRYST_TEST_PG")
                        })
                        .clone();
                    let (s, _) = crate::deaddrop::pg::PgStore::open(&url, limits, 4, || {
                        Ok(TEST_KEY.to_owned())
                    })
                    .unwrap();
                    Box::new(s)
                }
            }
        }
    }

    /// Runs `$test(&Place)` once per store kind, as `$test::redb` and `$test::postgres`.
    macro_rules! both_stores {
        ($($test:ident),* $(,)?) => {$(
            mod $test {
                #[test]
                fn redb() {
                    super::$test(&super::Place::redb());
                }
                #[test]
                fn postgres() {
                    if let Some(place) = super::Place::postgres(stringify!($test)) {
                        super::$test(&place);
                    }
                }
            }
        )*};
    }

    both_stores!(
        deposit_take_in_order_and_delete_on_read_survives_reopen,
        caps_refuse_without_storing,
        expiry_through_the_index_and_on_take,
        a_drain_takes_expired_messages_with_it_and_frees_their_counts,
        ack_removes_only_own_messages,
        duplicate_deposit_ids_are_stored_once,
        reader_sees_only_live_messages,
        writer_batches_concurrent_requests,
        deposits_queued_during_a_commit_share_the_next_one,
        answered_callers_share_the_next_commit_with_those_queued,
        a_lone_caller_never_waits_for_others,
        deposit_runs_around_other_ops_keep_the_order_of_ops,
        a_long_run_of_deposits_meets_the_caps_in_order,
    );

    fn take(s: &mut impl Store, mb: u8, now: u64, delete: bool) -> Vec<String> {
        match &s
            .apply(&[Op::Take {
                mailbox: [mb; 32],
                now,
                delete,
            }])
            .unwrap()[0]
        {
            Outcome::Messages(m) => m.iter().map(|d| d.payload.clone()).collect(),
            o => panic!("{o:?}"),
        }
    }

    fn deposit_take_in_order_and_delete_on_read_survives_reopen(place: &Place) {
        {
            let mut s = place.open("d", LIMITS);
            let out = s
                .apply(&[
                    msg(1, "a", "one", 100),
                    msg(1, "b", "two", 100),
                    msg(2, "c", "x", 100),
                ])
                .unwrap();
            assert_eq!(out, vec![Outcome::Deposited; 3]);
        }
        let mut s = place.open("d", LIMITS);
        assert_eq!(take(&mut s, 1, 10, false), ["one", "two"]);
        assert_eq!(take(&mut s, 1, 10, true), ["one", "two"]);
        assert!(take(&mut s, 1, 10, true).is_empty());
        assert_eq!(take(&mut s, 2, 10, true), ["x"]);
    }

    fn caps_refuse_without_storing(place: &Place) {
        let mut s = place.open("d", LIMITS);
        let out = s
            .apply(&[
                msg(1, "a", "1", 100),
                msg(1, "b", "2", 100),
                msg(1, "c", "3", 100),
                msg(1, "d", "4", 100),
                msg(2, "e", "5", 100),
                msg(3, "f", "6", 100),
            ])
            .unwrap();
        assert_eq!(out[3], Outcome::Refused(Full::Mailbox));
        assert_eq!(out[4], Outcome::Deposited);
        assert_eq!(out[5], Outcome::Refused(Full::Mailboxes));
        assert_eq!(take(&mut s, 1, 0, true), ["1", "2", "3"]);
        // Mailbox 1 is empty now, so a third mailbox fits.
        assert_eq!(
            s.apply(&[msg(3, "f", "6", 100)]).unwrap()[0],
            Outcome::Deposited
        );

        let small_limits = StoreLimits {
            max_bytes: 2 * OVERHEAD_BYTES + 9,
            ..LIMITS
        };
        let mut small = place.open("s", small_limits);
        let out = small
            .apply(&[msg(1, "a", "12345", 9), msg(1, "b", "123", 9)])
            .unwrap();
        assert_eq!(out, [Outcome::Deposited, Outcome::Refused(Full::Bytes)]);
        // Delivered messages give their bytes back.
        assert_eq!(take(&mut small, 1, 0, true), ["12345"]);
        let out = small.apply(&[msg(1, "b", "123", 9)]).unwrap();
        assert_eq!(out, [Outcome::Deposited]);
        // The totals survive a reopen (they are stored, not recounted).
        drop(small);
        let mut small = place.open("s", small_limits);
        let out = small.apply(&[msg(1, "c", "1234567", 9)]).unwrap();
        assert_eq!(out, [Outcome::Refused(Full::Bytes)]);
    }

    /// A deposit id already stored (a retried deposit) is acknowledged again without a
    /// second copy, in the same batch or a later one.
    fn duplicate_deposit_ids_are_stored_once(place: &Place) {
        let mut s = place.open("d", LIMITS);
        let out = s
            .apply(&[msg(1, "a", "one", 100), msg(1, "a", "one", 100)])
            .unwrap();
        assert_eq!(out, [Outcome::Deposited, Outcome::Deposited]);
        let out = s.apply(&[msg(1, "a", "one", 100)]).unwrap();
        assert_eq!(out, [Outcome::Deposited]);
        assert_eq!(take(&mut s, 1, 0, false), ["one"]);
        // Per-mailbox count: two more fit under max_pending = 3.
        let out = s
            .apply(&[
                msg(1, "b", "2", 100),
                msg(1, "c", "3", 100),
                msg(1, "d", "4", 100),
            ])
            .unwrap();
        assert_eq!(
            out,
            [
                Outcome::Deposited,
                Outcome::Deposited,
                Outcome::Refused(Full::Mailbox)
            ]
        );
        assert_eq!(take(&mut s, 1, 0, true), ["one", "2", "3"]);
        // Once delivered (deleted), the id is free again.
        let out = s.apply(&[msg(1, "a", "again", 100)]).unwrap();
        assert_eq!(out, [Outcome::Deposited]);
        assert_eq!(take(&mut s, 1, 0, true), ["again"]);
    }

    /// The read-first check: only live messages count, and reading changes nothing.
    fn reader_sees_only_live_messages(place: &Place) {
        let mut s = place.open("d", LIMITS);
        let reader = s.reader();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(!rt.block_on(reader.has_live(&[1; 32], 0)).unwrap());
        s.apply(&[msg(1, "a", "old", 50), msg(2, "b", "x", 200)])
            .unwrap();
        assert!(rt.block_on(reader.has_live(&[1; 32], 49)).unwrap());
        assert!(!rt.block_on(reader.has_live(&[1; 32], 50)).unwrap());
        assert!(rt.block_on(reader.has_live(&[2; 32], 50)).unwrap());
        assert!(!rt.block_on(reader.has_live(&[3; 32], 0)).unwrap());
        assert_eq!(take(&mut s, 1, 0, false), ["old"]);
    }

    fn expiry_through_the_index_and_on_take(place: &Place) {
        let mut s = place.open("d", LIMITS);
        s.apply(&[
            msg(1, "a", "old", 50),
            msg(1, "b", "new", 200),
            msg(2, "c", "x", 60),
        ])
        .unwrap();
        assert_eq!(take(&mut s, 1, 100, false), ["new"]);
        assert_eq!(
            s.apply(&[Op::Expire { now: 100 }]).unwrap(),
            [Outcome::Removed(1)]
        );
        assert_eq!(
            s.apply(&[Op::Expire { now: 100 }]).unwrap(),
            [Outcome::Removed(0)]
        );
        // Expired at exactly `expires_at`.
        assert!(take(&mut s, 1, 200, false).is_empty());
        // Expired messages free their mailbox: two new mailboxes fit (max 2).
        let out = s
            .apply(&[msg(3, "d", "3", 900), msg(4, "e", "4", 900)])
            .unwrap();
        assert_eq!(out, [Outcome::Deposited, Outcome::Deposited]);
    }

    /// Delete-on-read hands out the live messages and removes the expired ones with
    /// them: their bytes, the mailbox's pending count and the mailbox itself are free
    /// again afterwards.
    fn a_drain_takes_expired_messages_with_it_and_frees_their_counts(place: &Place) {
        let mut s = place.open("d", LIMITS);
        let big = "x".repeat(600_000);
        s.apply(&[
            msg(1, "a", &big, 50),
            msg(1, "b", "new", 200),
            msg(1, "c", "newer", 200),
            msg(2, "d", "x", 900),
        ])
        .unwrap();
        assert_eq!(take(&mut s, 1, 100, true), ["new", "newer"]);
        assert!(take(&mut s, 1, 100, false).is_empty());
        // Mailbox 1 counts from zero again (at most 3 pending) and is one of the two
        // mailboxes; the expired message's 600 kB are free for mailbox 2.
        let out = s
            .apply(&[
                msg(1, "e", "1", 900),
                msg(1, "f", "2", 900),
                msg(1, "g", "3", 900),
                msg(2, "h", &big, 900),
                msg(3, "i", "3", 900),
            ])
            .unwrap();
        assert_eq!(
            out,
            [
                Outcome::Deposited,
                Outcome::Deposited,
                Outcome::Deposited,
                Outcome::Deposited,
                Outcome::Refused(Full::Mailboxes),
            ]
        );
    }

    fn ack_removes_only_own_messages(place: &Place) {
        let mut s = place.open("d", LIMITS);
        s.apply(&[
            msg(1, "a", "1", 100),
            msg(1, "b", "2", 100),
            msg(2, "c", "3", 100),
        ])
        .unwrap();
        let out = s
            .apply(&[Op::Ack {
                mailbox: [1; 32],
                ids: vec!["a".into(), "c".into(), "zz".into(), "a".into()],
            }])
            .unwrap();
        assert_eq!(out, [Outcome::Removed(1)]);
        assert_eq!(take(&mut s, 1, 0, false), ["2"]);
        assert_eq!(take(&mut s, 2, 0, false), ["3"]);
    }

    /// A file backend whose "disk" holds `cap` bytes: writes and growth past it fail
    /// with ENOSPC, as on a full filesystem.
    #[derive(Debug)]
    struct SmallDisk {
        inner: redb::backends::FileBackend,
        cap: Arc<AtomicU64>,
    }

    impl SmallDisk {
        fn full(&self, end: u64) -> std::io::Result<()> {
            if end > self.cap.load(Ordering::Relaxed) {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            Ok(())
        }
    }

    impl redb::StorageBackend for SmallDisk {
        fn len(&self) -> std::io::Result<u64> {
            self.inner.len()
        }
        fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
            self.inner.read(offset, len)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.full(len)?;
            self.inner.set_len(len)
        }
        fn sync_data(&self, eventual: bool) -> std::io::Result<()> {
            self.inner.sync_data(eventual)
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.full(offset + data.len() as u64)?;
            self.inner.write(offset, data)
        }
    }

    /// ENOSPC: deposits fail without an acknowledgement and leave nothing partial;
    /// everything acknowledged before stays intact, in memory and after reopening.
    #[test]
    fn disk_full_refuses_without_losing_or_tearing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        let cap = Arc::new(AtomicU64::new(u64::MAX));
        let open = |cap: &Arc<AtomicU64>| {
            let (path, cap) = (path.clone(), Arc::clone(cap));
            let make = move || {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .unwrap();
                SmallDisk {
                    inner: redb::backends::FileBackend::new(file).unwrap(),
                    cap: Arc::clone(&cap),
                }
            };
            RedbStore::with_backend(
                make,
                StoreLimits {
                    max_pending: 1 << 20,
                    max_mailboxes: 8,
                    max_bytes: u64::MAX,
                },
            )
        };
        let mut s = open(&cap).unwrap();
        let big = "p".repeat(20_000);
        let mut acked = Vec::new();
        for i in 0..5 {
            let p = format!("{i}{big}");
            assert_eq!(
                s.apply(&[msg(1, &format!("a{i}"), &p, 100)]).unwrap(),
                [Outcome::Deposited]
            );
            acked.push(p);
        }
        // The disk fills up at its current size.
        cap.store(std::fs::metadata(&path).unwrap().len(), Ordering::Relaxed);
        let mut failures = 0;
        for i in 5..40 {
            let p = format!("{i}{big}");
            match s.apply(&[msg(1, &format!("a{i}"), &p, 100)]) {
                Ok(o) => {
                    assert_eq!(o, [Outcome::Deposited]);
                    acked.push(p);
                }
                Err(_) => {
                    failures += 1;
                    // As the writer does: reopen (still on the full disk).
                    s.recover().unwrap();
                }
            }
        }
        assert!(failures > 0, "the small disk never filled");
        let heads = |v: &[String]| {
            v.iter()
                .map(|p| p[..p.len().min(4)].to_owned())
                .collect::<Vec<_>>()
        };
        // What was acknowledged is readable on the full disk ...
        let got = take(&mut s, 1, 0, false);
        assert!(
            got == acked,
            "full disk: {:?} vs acked {:?}",
            heads(&got),
            heads(&acked)
        );
        // ... and once space is back, the store takes deposits again.
        cap.store(u64::MAX, Ordering::Relaxed);
        if s.apply(&[msg(1, "late", "late", 100)]).is_err() {
            s.recover().unwrap();
            assert_eq!(
                s.apply(&[msg(1, "late", "late", 100)]).unwrap(),
                [Outcome::Deposited]
            );
        }
        acked.push("late".into());
        drop(s);
        // After reopening: exactly the acknowledged ones.
        let mut s = open(&cap).unwrap();
        let got = take(&mut s, 1, 0, false);
        assert!(
            got == acked,
            "reopened: {:?} vs acked {:?} ({failures} failures)",
            heads(&got),
            heads(&acked)
        );
    }

    /// Concurrent deposits through the writer share one transaction (group commit),
    /// each answered after the commit.
    fn writer_batches_concurrent_requests(place: &Place) {
        let s = place.open("d", LIMITS);
        let w = Writer::spawn(s, 64, std::time::Duration::from_secs(3600), || 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(writer_batches(w));
    }

    async fn writer_batches(w: Writer) {
        let mut tasks = Vec::new();
        for i in 0..3u8 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                w.submit(msg(1, &format!("id{i}"), "p", 100)).await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(Outcome::Deposited));
        }
        let got = w
            .submit(Op::Take {
                mailbox: [1; 32],
                now: 0,
                delete: true,
            })
            .await
            .unwrap();
        let Outcome::Messages(m) = got else { panic!() };
        assert_eq!(m.len(), 3);
    }

    /// Holds its first batch until released; records every batch's size.
    struct Gated {
        inner: Box<dyn Store>,
        entered: mpsc::Sender<()>,
        gate: Option<mpsc::Receiver<()>>,
        sizes: Arc<Mutex<Vec<usize>>>,
    }

    impl Store for Gated {
        fn apply(&mut self, ops: &[Op]) -> Result<Vec<Outcome>, StoreError> {
            if let Some(gate) = self.gate.take() {
                let _ = self.entered.send(());
                let _ = gate.recv();
            }
            self.sizes.lock().unwrap().push(ops.len());
            self.inner.apply(ops)
        }

        fn reader(&self) -> Reader {
            self.inner.reader()
        }
    }

    /// Group commit, deterministically: while one batch commits, the deposits queued
    /// behind it are applied together as the next batch (one transaction, one commit),
    /// and each is answered only after that commit.
    fn deposits_queued_during_a_commit_share_the_next_one(place: &Place) {
        let (entered, entered_rx) = mpsc::channel();
        let (open, gate) = mpsc::channel();
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let store = Gated {
            inner: place.open(
                "d",
                StoreLimits {
                    max_pending: 100,
                    ..LIMITS
                },
            ),
            entered,
            gate: Some(gate),
            sizes: Arc::clone(&sizes),
        };
        let w = Writer::spawn(store, 64, std::time::Duration::from_secs(3600), || 0);
        let mut answers = Vec::new();
        let mut send = |op: Op| answers.push(w.enqueue(op).unwrap());
        send(msg(1, "first", "p", 100));
        entered_rx.recv().unwrap();
        for i in 0..9 {
            send(msg(1, &format!("queued{i}"), "p", 100));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Nothing is answered before its commit.
        let mut pending = answers;
        for a in &mut pending {
            assert!(a.try_recv().is_err());
        }
        open.send(()).unwrap();
        for a in pending {
            assert_eq!(rt.block_on(a).unwrap(), Ok(Outcome::Deposited));
        }
        assert_eq!(*sizes.lock().unwrap(), [1, 9]);
    }

    /// Group commit with clients that wait for their answer: the callers one commit
    /// answered come back and share the next transaction with the requests that queued
    /// behind that commit, instead of the two groups alternating (each request waiting
    /// for two commits).
    fn answered_callers_share_the_next_commit_with_those_queued(place: &Place) {
        let (entered, entered_rx) = mpsc::channel();
        let (open, gate) = mpsc::channel();
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let store = Gated {
            inner: place.open(
                "d",
                StoreLimits {
                    max_pending: 100,
                    ..LIMITS
                },
            ),
            entered,
            gate: Some(gate),
            sizes: Arc::clone(&sizes),
        };
        // A window that cannot run out: the batch closes when the caller is back.
        let hour = std::time::Duration::from_secs(3600);
        let w = Writer::spawn_gathering(
            store,
            64,
            hour,
            || 0,
            |_| std::time::Duration::from_secs(3600),
        );
        let send = |op: Op| w.enqueue(op).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let first = send(msg(1, "first", "p", 100));
        entered_rx.recv().unwrap();
        let queued: Vec<_> = (0..3)
            .map(|i| send(msg(1, &format!("queued{i}"), "p", 100)))
            .collect();
        open.send(()).unwrap();
        assert_eq!(rt.block_on(first).unwrap(), Ok(Outcome::Deposited));
        // The first caller sends again; the three queued ones were held for it (or it
        // was back before the writer looked: either way one batch).
        let again = send(msg(1, "again", "p", 100));
        for a in queued {
            assert_eq!(rt.block_on(a).unwrap(), Ok(Outcome::Deposited));
        }
        assert_eq!(rt.block_on(again).unwrap(), Ok(Outcome::Deposited));
        assert_eq!(*sizes.lock().unwrap(), [1, 4]);
        let stats = w.stats();
        assert_eq!(stats.batch_size.count(), 2);
        assert_eq!(stats.batch_size.sum(), 5);
        assert_eq!(stats.commit_micros.count(), 2);
    }

    /// One client at a time: nothing ever queues behind a commit, so the writer never
    /// waits before one (a wait would show in `gather_micros`).
    fn a_lone_caller_never_waits_for_others(place: &Place) {
        let s = place.open("d", LIMITS);
        let w = Writer::spawn_gathering(
            s,
            64,
            std::time::Duration::from_secs(3600),
            || 0,
            |_| std::time::Duration::from_secs(3600),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for i in 0..3 {
            let op = msg(1, &format!("id{i}"), "p", 100);
            assert_eq!(rt.block_on(w.submit(op)), Ok(Outcome::Deposited));
        }
        let stats = w.stats();
        assert_eq!(stats.batch_size.cumulative()[0], (Some(1), 3));
        assert_eq!(stats.gather_micros.load(Ordering::Relaxed), 0);
    }

    /// Deposits next to takes and acks in one batch: every op sees what the ops before
    /// it left (the PostgreSQL store inserts a run of deposits with one statement).
    fn deposit_runs_around_other_ops_keep_the_order_of_ops(place: &Place) {
        let mut s = place.open(
            "d",
            StoreLimits {
                max_pending: 100,
                ..LIMITS
            },
        );
        let take_op = |delete| Op::Take {
            mailbox: [1; 32],
            now: 0,
            delete,
        };
        let out = s
            .apply(&[
                msg(1, "a", "1", 100),
                msg(1, "b", "2", 100),
                take_op(true),
                // `a` was delivered and deleted: its id is free again.
                msg(1, "a", "3", 100),
                msg(1, "c", "4", 100),
                msg(1, "c", "4 again", 100),
                Op::Ack {
                    mailbox: [1; 32],
                    ids: vec!["c".into()],
                },
                msg(1, "c", "5", 100),
                take_op(false),
            ])
            .unwrap();
        let delivered = |v: &[(&str, &str)]| {
            Outcome::Messages(
                v.iter()
                    .map(|(id, p)| Delivered {
                        deposit_id: (*id).into(),
                        payload: (*p).into(),
                    })
                    .collect(),
            )
        };
        assert_eq!(
            out,
            [
                Outcome::Deposited,
                Outcome::Deposited,
                delivered(&[("a", "1"), ("b", "2")]),
                Outcome::Deposited,
                Outcome::Deposited,
                Outcome::Deposited,
                Outcome::Removed(1),
                Outcome::Deposited,
                delivered(&[("a", "3"), ("c", "5")]),
            ]
        );
        assert_eq!(take(&mut s, 1, 0, true), ["3", "5"]);
    }

    /// 300 deposits in one batch over three mailboxes, against a per-mailbox cap of
    /// 100 and a mailbox cap of 2: exactly the first 100 of each of the first two
    /// mailboxes are stored, in order, and the totals carry over to the next batch.
    fn a_long_run_of_deposits_meets_the_caps_in_order(place: &Place) {
        let limits = StoreLimits {
            max_pending: 100,
            max_mailboxes: 2,
            max_bytes: 1 << 30,
        };
        let mut s = place.open("d", limits);
        let ops: Vec<Op> = (0..300)
            .map(|i| msg(1 + (i % 3) as u8, &format!("id{i}"), &i.to_string(), 100))
            .chain((0..150).map(|i| msg(1, &format!("more{i}"), "m", 100)))
            .collect();
        let out = s.apply(&ops).unwrap();
        for (i, o) in out.iter().enumerate() {
            let want = match (i, i % 3) {
                (0..300, 2) => Outcome::Refused(Full::Mailboxes),
                (0..300, _) => Outcome::Deposited,
                _ => Outcome::Refused(Full::Mailbox),
            };
            assert_eq!(*o, want, "op {i}");
        }
        let first: Vec<String> = (0..300).step_by(3).map(|i: usize| i.to_string()).collect();
        assert_eq!(take(&mut s, 1, 0, false), first);
        let out = s
            .apply(&[msg(1, "later", "x", 100), msg(3, "new", "x", 100)])
            .unwrap();
        assert_eq!(
            out,
            [
                Outcome::Refused(Full::Mailbox),
                Outcome::Refused(Full::Mailboxes)
            ]
        );
        assert_eq!(take(&mut s, 2, 0, true).len(), 100);
        let out = s.apply(&[msg(3, "new", "x", 100)]).unwrap();
        assert_eq!(out, [Outcome::Deposited]);
    }
}
