//! The durable store of `Conversations` queues: [`ConversationStore`] is where the
//! dead-drop keeps its messages. With the dead-drop on PostgreSQL the queues are in its
//! database ([`super::pg`]); otherwise they are in a redb file in the data directory
//! beside the dead-drop's ([`RedbConversations`], this module). Both number, cap, charge
//! and expire items the same way, and answer a publish only after its commit.
//!
//! In the redb file every change is one write transaction committed with redb's
//! default `Durability::Immediate` (fsynced before `commit` returns).
//!
//! Layout (keys big-endian, so byte order is numeric order):
//! - `items`: queueId (32) ‖ seq (u64) → expires (u64, unix ms) ‖ item (the marshalled
//!   `EncryptedConversationItem`)
//! - `queues`: queueId → next seq (u64) ‖ items held (u64); removed when the queue
//!   empties (by acknowledgement), so only queues holding items take space
//! - `meta`: `bytes` (bytes charged for held items), `queues` (queues holding items)
//! - `expiry`: expires (u64) ‖ queueId ‖ seq → nothing: every held item by expiry time
//!   (rebuilt from `items` when a file written before it existed is opened)
//!
//! Expired items are removed from the front of a queue when it is next published to,
//! read or acknowledged; readers never see them. A publish the caps would refuse first
//! sweeps up to [`SWEEP_BATCH`] expired items of every queue (through `expiry`), so
//! queues nobody touches again cannot hold the store full after their items expired.

use redb::{Database, ReadableTable as _, ReadableTableMetadata as _, TableDefinition};
use std::path::Path;

const ITEMS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("items");
const QUEUES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("queues");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const EXPIRY: TableDefinition<'_, &[u8], ()> = TableDefinition::new("expiry");

/// Expired items a refused publish sweeps at most before deciding again (both stores).
pub const SWEEP_BATCH: usize = 10_000;

/// Bytes an item is charged beyond its own (key, header, index).
pub const OVERHEAD_BYTES: u64 = 64;

/// A queue id (the queue's Ed25519 public key).
pub type QueueId = [u8; 32];

/// Caps checked inside the transaction that would exceed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Most items per queue.
    pub max_items: u64,
    /// Most queues holding items.
    pub max_queues: u64,
    /// Most bytes charged in total.
    pub max_bytes: u64,
    /// How long an item is kept unacknowledged, ms.
    pub item_ttl_ms: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_items: 10_000,
            max_queues: 100_000,
            max_bytes: 1 << 30,
            item_ttl_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The queue holds `max_items`.
    #[error("queue full")]
    QueueFull,
    /// `max_queues` or `max_bytes` reached.
    #[error("store full")]
    StoreFull,
    /// redb failed (nothing was committed).
    #[error("store: {0}")]
    Db(String),
}

fn dberr<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
}

fn item_key(q: &QueueId, seq: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(q);
    k[32..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn expiry_key(expires: u64, q: &QueueId, seq: u64) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..8].copy_from_slice(&expires.to_be_bytes());
    k[8..40].copy_from_slice(q);
    k[40..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(i..i + 8) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

fn queue_value(next: u64, count: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&next.to_be_bytes());
    v[8..].copy_from_slice(&count.to_be_bytes());
    v
}

/// One stored item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredItem {
    /// Its sequence number in its queue (1, 2, ...).
    pub seq: u64,
    /// The marshalled `EncryptedConversationItem`.
    pub item: Vec<u8>,
}

/// The counts a change decides on, as read in its transaction (both stores keep them the
/// same way): the queue's items and the store's totals. Sans-IO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tally {
    /// Items the queue holds.
    pub count: u64,
    /// Bytes charged for every held item.
    pub bytes: u64,
    /// Queues holding items.
    pub queues: u64,
}

impl Tally {
    /// After `n` of the queue's items, charged `bytes`, were removed (expired or
    /// acknowledged); a queue they empty no longer counts.
    pub(super) fn removed(mut self, (n, bytes): (u64, u64)) -> Self {
        if self.count > 0 && n >= self.count {
            self.queues = self.queues.saturating_sub(1);
        }
        self.count -= n.min(self.count);
        self.bytes -= bytes.min(self.bytes);
        self
    }

    /// After a sweep of other queues freed `bytes` and emptied `queues`.
    pub(super) fn swept(mut self, bytes: u64, queues: u64) -> Self {
        self.bytes -= bytes.min(self.bytes);
        self.queues -= queues.min(self.queues);
        self
    }

    /// Why `limits` refuse one more item of `len` bytes: the queue's cap first, then
    /// the store's (bytes, and queues when this one holds nothing yet).
    pub(super) fn refusal(&self, limits: &StoreLimits, len: usize) -> Option<StoreError> {
        if self.count >= limits.max_items {
            return Some(StoreError::QueueFull);
        }
        let new_queue = self.count == 0;
        (self.bytes + len as u64 + OVERHEAD_BYTES > limits.max_bytes
            || (new_queue && self.queues >= limits.max_queues))
            .then_some(StoreError::StoreFull)
    }

    /// After one item of `len` bytes was added.
    pub(super) fn added(mut self, len: usize) -> Self {
        if self.count == 0 {
            self.queues += 1;
        }
        self.count += 1;
        self.bytes += len as u64 + OVERHEAD_BYTES;
        self
    }
}

/// Where the queues are: the store the dead-drop uses.
#[derive(Debug, Clone)]
pub enum ConversationStore {
    /// The redb file (`qredo.redb` in the data directory).
    Redb(std::sync::Arc<RedbConversations>),
    /// The dead-drop's PostgreSQL database.
    Postgres(super::pg::PgConversations),
}

impl ConversationStore {
    /// Which store, for the start-up line.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Redb(_) => "redb",
            Self::Postgres(_) => "postgres (the dead-drop's database)",
        }
    }

    /// Appends `item` to `queue`, durable when this returns; its sequence number.
    pub async fn publish(
        &self,
        queue: &QueueId,
        item: &[u8],
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        match self {
            Self::Redb(db) => {
                let (db, queue, item) = (std::sync::Arc::clone(db), *queue, item.to_vec());
                blocking(move || db.publish(&queue, &item, now_ms)).await
            }
            Self::Postgres(pg) => pg.publish(queue, item, now_ms).await,
        }
    }

    /// Up to `limit` unexpired items of `queue` after `after`, and whether they are all
    /// there is (no further item).
    pub async fn query(
        &self,
        queue: &QueueId,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<(Vec<StoredItem>, bool), StoreError> {
        match self {
            Self::Redb(db) => {
                let (db, queue) = (std::sync::Arc::clone(db), *queue);
                blocking(move || db.query(&queue, after, limit, now_ms)).await
            }
            Self::Postgres(pg) => pg.query(queue, after, limit, now_ms).await,
        }
    }

    /// Removes every item of `queue` up to and including `up_to`; durable when this
    /// returns. The number removed.
    pub async fn acknowledge(
        &self,
        queue: &QueueId,
        up_to: u64,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        match self {
            Self::Redb(db) => {
                let (db, queue) = (std::sync::Arc::clone(db), *queue);
                blocking(move || db.acknowledge(&queue, up_to, now_ms)).await
            }
            Self::Postgres(pg) => pg.acknowledge(queue, up_to, now_ms).await,
        }
    }
}

/// Runs a redb call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Db(format!("store task: {e}"))))
}

/// The queues in a redb file. Blocking: call from `spawn_blocking`.
#[derive(Debug)]
pub struct RedbConversations {
    db: Database,
    limits: StoreLimits,
}

impl RedbConversations {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path, limits: StoreLimits) -> Result<Self, StoreError> {
        let db = crate::redb_file::create(path).map_err(dberr)?;
        let txn = db.begin_write().map_err(dberr)?;
        {
            let items = txn.open_table(ITEMS).map_err(dberr)?;
            txn.open_table(QUEUES).map_err(dberr)?;
            txn.open_table(META).map_err(dberr)?;
            let mut expiry = txn.open_table(EXPIRY).map_err(dberr)?;
            // A file from before the expiry index: index what it holds.
            if expiry.is_empty().map_err(dberr)? {
                for entry in items.iter().map_err(dberr)? {
                    let (k, v) = entry.map_err(dberr)?;
                    let k = k.value();
                    let mut queue = [0u8; 32];
                    queue.copy_from_slice(k.get(..32).unwrap_or(&[0; 32]));
                    let key = expiry_key(u64_at(v.value(), 0), &queue, u64_at(k, 32));
                    expiry.insert(&key[..], ()).map_err(dberr)?;
                }
            }
        }
        txn.commit().map_err(dberr)?;
        Ok(Self { db, limits })
    }

    /// Appends `item` to `queue`, durable when this returns; its sequence number.
    pub fn publish(&self, queue: &QueueId, item: &[u8], now_ms: u64) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(dberr)?;
        let seq = {
            let mut items = txn.open_table(ITEMS).map_err(dberr)?;
            let mut queues = txn.open_table(QUEUES).map_err(dberr)?;
            let mut meta = txn.open_table(META).map_err(dberr)?;
            let mut expiry = txn.open_table(EXPIRY).map_err(dberr)?;
            let (next, count) = match queues.get(&queue[..]).map_err(dberr)? {
                Some(v) => (u64_at(v.value(), 0), u64_at(v.value(), 8)),
                // A queue's entry goes when it empties; numbering a new one from the
                // clock keeps its sequence values above any it had before.
                None => (first_seq(now_ms), 0),
            };
            let mut tally = Tally {
                count,
                bytes: meta.get("bytes").map_err(dberr)?.map_or(0, |v| v.value()),
                queues: meta.get("queues").map_err(dberr)?.map_or(0, |v| v.value()),
            }
            .removed(purge_expired(&mut items, &mut expiry, queue, now_ms)?);
            match tally.refusal(&self.limits, item.len()) {
                None => {}
                Some(StoreError::StoreFull) => {
                    let swept = sweep_expired(&mut items, &mut expiry, &mut queues, queue, now_ms)?;
                    tally = tally.swept(swept.bytes, swept.queues);
                    if let Some(refused) = tally.refusal(&self.limits, item.len()) {
                        // Dropped uncommitted: the sweep is kept only with a publish.
                        return Err(refused);
                    }
                }
                Some(refused) => return Err(refused),
            }
            let expires = now_ms.saturating_add(self.limits.item_ttl_ms);
            let mut value = Vec::with_capacity(8 + item.len());
            value.extend_from_slice(&expires.to_be_bytes());
            value.extend_from_slice(item);
            items
                .insert(&item_key(queue, next)[..], value.as_slice())
                .map_err(dberr)?;
            expiry
                .insert(&expiry_key(expires, queue, next)[..], ())
                .map_err(dberr)?;
            let tally = tally.added(item.len());
            queues
                .insert(&queue[..], &queue_value(next + 1, tally.count)[..])
                .map_err(dberr)?;
            meta.insert("bytes", tally.bytes).map_err(dberr)?;
            meta.insert("queues", tally.queues).map_err(dberr)?;
            next
        };
        txn.commit().map_err(dberr)?;
        Ok(seq)
    }

    /// Up to `limit` unexpired items of `queue` after `after`, and whether they are all
    /// there is (no further item).
    pub fn query(
        &self,
        queue: &QueueId,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<(Vec<StoredItem>, bool), StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let items = txn.open_table(ITEMS).map_err(dberr)?;
        let start = item_key(queue, after.saturating_add(1));
        let end = item_key(queue, u64::MAX);
        let mut out = Vec::new();
        for entry in items.range(&start[..]..=&end[..]).map_err(dberr)? {
            let (k, v) = entry.map_err(dberr)?;
            let v = v.value();
            if u64_at(v, 0) <= now_ms {
                continue;
            }
            if out.len() == limit {
                return Ok((out, false));
            }
            out.push(StoredItem {
                seq: u64_at(k.value(), 32),
                item: v.get(8..).unwrap_or_default().to_vec(),
            });
        }
        Ok((out, true))
    }

    /// Removes every item of `queue` up to and including `up_to`; durable when this
    /// returns. The number removed.
    pub fn acknowledge(&self, queue: &QueueId, up_to: u64, now_ms: u64) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(dberr)?;
        let removed = {
            let mut items = txn.open_table(ITEMS).map_err(dberr)?;
            let mut queues = txn.open_table(QUEUES).map_err(dberr)?;
            let mut meta = txn.open_table(META).map_err(dberr)?;
            let mut expiry = txn.open_table(EXPIRY).map_err(dberr)?;
            let Some((next, count)) = queues
                .get(&queue[..])
                .map_err(dberr)?
                .map(|v| (u64_at(v.value(), 0), u64_at(v.value(), 8)))
            else {
                return Ok(0);
            };
            let (expired, mut freed) = purge_expired(&mut items, &mut expiry, queue, now_ms)?;
            let start = item_key(queue, 0);
            let end = item_key(queue, up_to);
            let keys: Vec<(u64, u64, u64)> = items
                .range(&start[..]..=&end[..])
                .map_err(dberr)?
                .map(|e| {
                    e.map(|(k, v)| {
                        let v = v.value();
                        (u64_at(k.value(), 32), u64_at(v, 0), v.len() as u64)
                    })
                })
                .collect::<Result<_, _>>()
                .map_err(dberr)?;
            for &(seq, expires, len) in &keys {
                remove_item(&mut items, &mut expiry, queue, seq, expires)?;
                freed += len - 8 + OVERHEAD_BYTES;
            }
            let tally = Tally {
                count,
                bytes: meta.get("bytes").map_err(dberr)?.map_or(0, |v| v.value()),
                queues: meta.get("queues").map_err(dberr)?.map_or(0, |v| v.value()),
            }
            .removed((expired + keys.len() as u64, freed));
            if tally.count == 0 {
                queues.remove(&queue[..]).map_err(dberr)?;
            } else {
                queues
                    .insert(&queue[..], &queue_value(next, tally.count)[..])
                    .map_err(dberr)?;
            }
            meta.insert("bytes", tally.bytes).map_err(dberr)?;
            meta.insert("queues", tally.queues).map_err(dberr)?;
            keys.len() as u64
        };
        txn.commit().map_err(dberr)?;
        Ok(removed)
    }
}

/// The first sequence value of a queue created at `now_ms`: microseconds since the
/// epoch, so a queue that emptied (and lost its entry) and is used again continues
/// above its old numbers (unless the clock went back meanwhile).
pub fn first_seq(now_ms: u64) -> u64 {
    now_ms.saturating_mul(1000).max(1)
}

type Items<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;
type Expiry<'t> = redb::Table<'t, &'static [u8], ()>;

/// Removes one item and its expiry entry.
fn remove_item(
    items: &mut Items<'_>,
    expiry: &mut Expiry<'_>,
    queue: &QueueId,
    seq: u64,
    expires: u64,
) -> Result<(), StoreError> {
    items.remove(&item_key(queue, seq)[..]).map_err(dberr)?;
    expiry
        .remove(&expiry_key(expires, queue, seq)[..])
        .map_err(dberr)?;
    Ok(())
}

/// Removes expired items from the front of `queue`: (items, bytes charged) freed.
fn purge_expired(
    items: &mut Items<'_>,
    expiry: &mut Expiry<'_>,
    queue: &QueueId,
    now_ms: u64,
) -> Result<(u64, u64), StoreError> {
    let start = item_key(queue, 0);
    let end = item_key(queue, u64::MAX);
    let mut doomed = Vec::new();
    for entry in items.range(&start[..]..=&end[..]).map_err(dberr)? {
        let (k, v) = entry.map_err(dberr)?;
        let expires = u64_at(v.value(), 0);
        if expires > now_ms {
            break;
        }
        doomed.push((u64_at(k.value(), 32), expires, v.value().len() as u64));
    }
    let mut bytes = 0;
    for &(seq, expires, len) in &doomed {
        remove_item(items, expiry, queue, seq, expires)?;
        bytes += len - 8 + OVERHEAD_BYTES;
    }
    Ok((doomed.len() as u64, bytes))
}

/// What [`sweep_expired`] freed.
struct Swept {
    bytes: u64,
    queues: u64,
}

/// Removes up to [`SWEEP_BATCH`] expired items of every queue but `except` (whose own
/// were just purged and whose entry the caller is about to write), oldest first,
/// updating their queues' entries.
fn sweep_expired(
    items: &mut Items<'_>,
    expiry: &mut Expiry<'_>,
    queues: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    except: &QueueId,
    now_ms: u64,
) -> Result<Swept, StoreError> {
    let end = expiry_key(now_ms, &[0xff; 32], u64::MAX);
    let mut doomed: Vec<(u64, QueueId, u64)> = Vec::new();
    for entry in expiry.range(..=&end[..]).map_err(dberr)? {
        let (k, ()) = entry.map(|(k, v)| (k, v.value())).map_err(dberr)?;
        let k = k.value();
        let mut queue = [0u8; 32];
        queue.copy_from_slice(k.get(8..40).unwrap_or(&[0; 32]));
        if queue != *except {
            doomed.push((u64_at(k, 0), queue, u64_at(k, 40)));
        }
        if doomed.len() == SWEEP_BATCH {
            break;
        }
    }
    let mut per_queue: std::collections::BTreeMap<QueueId, u64> = Default::default();
    let mut swept = Swept {
        bytes: 0,
        queues: 0,
    };
    for (expires, queue, seq) in doomed {
        let len = items
            .get(&item_key(&queue, seq)[..])
            .map_err(dberr)?
            .map(|v| v.value().len() as u64);
        remove_item(items, expiry, &queue, seq, expires)?;
        if let Some(len) = len {
            swept.bytes += len - 8 + OVERHEAD_BYTES;
            *per_queue.entry(queue).or_default() += 1;
        }
    }
    for (queue, n) in per_queue {
        let Some((next, count)) = queues
            .get(&queue[..])
            .map_err(dberr)?
            .map(|v| (u64_at(v.value(), 0), u64_at(v.value(), 8)))
        else {
            continue;
        };
        let left = count.saturating_sub(n);
        if left == 0 {
            queues.remove(&queue[..]).map_err(dberr)?;
            swept.queues += 1;
        } else {
            queues
                .insert(&queue[..], &queue_value(next, left)[..])
                .map_err(dberr)?;
        }
    }
    Ok(swept)
}

/// The behaviour both stores share, run on each (`open` opens the same store afresh:
/// what a publish committed is still there).
#[cfg(test)]
pub(super) async fn check_store(open: impl Fn() -> ConversationStore) {
    let s = open();
    let q = [1u8; 32];
    let base = first_seq(0);
    assert_eq!(s.publish(&q, b"a", 0).await.unwrap(), base);
    assert_eq!(s.publish(&q, b"b", 10).await.unwrap(), base + 1);
    assert_eq!(s.publish(&q, b"c", 20).await.unwrap(), base + 2);
    assert!(matches!(
        s.publish(&q, b"d", 30).await,
        Err(StoreError::QueueFull)
    ));
    let seqs = |items: Vec<StoredItem>| items.iter().map(|i| i.seq - base).collect::<Vec<_>>();
    let (items, all) = s.query(&q, 0, 2, 30).await.unwrap();
    assert_eq!(seqs(items), [0, 1]);
    assert!(!all);
    let (items, all) = s.query(&q, base + 1, 10, 30).await.unwrap();
    assert_eq!(
        items,
        [StoredItem {
            seq: base + 2,
            item: b"c".to_vec()
        }]
    );
    assert!(all);
    assert_eq!(s.acknowledge(&q, base + 1, 30).await.unwrap(), 2);
    assert_eq!(s.publish(&q, b"d", 40).await.unwrap(), base + 3);
    assert!(s.publish(&[2; 32], b"x", 40).await.is_ok());
    assert!(matches!(
        s.publish(&[3; 32], b"x", 40).await,
        Err(StoreError::StoreFull)
    ));
    // Bytes are capped too (10,000 in the tests' limits): what is left fits in queue 2, one
    // more byte than is left does not.
    let used = 3 + 3 * OVERHEAD_BYTES;
    let big = vec![7u8; usize::try_from(10_000 - used - OVERHEAD_BYTES).unwrap()];
    assert!(matches!(
        s.publish(&[2; 32], &[big.as_slice(), b"!"].concat(), 40)
            .await,
        Err(StoreError::StoreFull)
    ));
    let fits = s.publish(&[2; 32], &big, 40).await.unwrap();
    assert_eq!(s.acknowledge(&[2; 32], fits, 40).await.unwrap(), 2);
    drop(s);
    // Durable: reopened, the queue continues; expired items are gone.
    let s = open();
    let (items, _) = s.query(&q, 0, 10, 1019).await.unwrap();
    assert_eq!(seqs(items), [2, 3]);
    assert_eq!(s.publish(&q, b"e", 2000).await.unwrap(), base + 4);
    let (items, _) = s.query(&q, 0, 10, 2000).await.unwrap();
    assert_eq!(seqs(items), [4]);
    // Emptied by acknowledgement, the queue's entry goes; used again later, it numbers
    // above everything before.
    assert_eq!(s.acknowledge(&q, base + 4, 2000).await.unwrap(), 1);
    assert_eq!(s.acknowledge(&q, base + 4, 2000).await.unwrap(), 0);
    let again = s.publish(&q, b"f", 5000).await.unwrap();
    assert_eq!(again, first_seq(5000));
    assert!(again > base + 4);
    // Two queues free again: queue 2 emptied, so a third may hold items.
    assert!(s.publish(&[3; 32], b"x", 5000).await.is_ok());
    // Both queues' items expire and nobody touches them again: a publish to a new
    // queue sweeps them rather than finding the store full for good; the counts stay
    // true (two queues may hold items again, a third may not).
    assert!(s.publish(&[4; 32], b"y", 7000).await.is_ok());
    assert!(s.publish(&[5; 32], b"y", 7000).await.is_ok());
    assert!(matches!(
        s.publish(&[6; 32], b"y", 7000).await,
        Err(StoreError::StoreFull)
    ));
    assert_eq!(s.query(&q, 0, 10, 7000).await.unwrap().0, []);
    assert_eq!(s.acknowledge(&q, u64::MAX, 7000).await.unwrap(), 0);
    // Bytes swept too: at 9000 the two items have expired, and what remains fits.
    let big = vec![1u8; usize::try_from(10_000 - OVERHEAD_BYTES).unwrap()];
    assert!(s.publish(&[6; 32], &big, 9000).await.is_ok());
    assert!(matches!(
        s.publish(&[6; 32], b"z", 9000).await,
        Err(StoreError::StoreFull)
    ));
}

/// The limits [`check_store`] expects.
#[cfg(test)]
pub(super) const TEST_LIMITS: StoreLimits = StoreLimits {
    max_items: 3,
    max_queues: 2,
    max_bytes: 10_000,
    item_ttl_ms: 1000,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publish_query_ack_expire_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        check_store(|| {
            ConversationStore::Redb(std::sync::Arc::new(
                RedbConversations::open(&path, TEST_LIMITS).unwrap(),
            ))
        })
        .await;
    }

    /// A file written before the expiry index existed gets it on open, so its expired
    /// items are swept like any others.
    #[test]
    fn a_file_without_the_expiry_index_is_indexed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        let store = RedbConversations::open(&path, TEST_LIMITS).unwrap();
        store.publish(&[1; 32], b"a", 0).unwrap();
        store.publish(&[2; 32], b"b", 0).unwrap();
        let txn = store.db.begin_write().unwrap();
        assert!(txn.delete_table(EXPIRY).unwrap());
        txn.commit().unwrap();
        drop(store);
        let store = RedbConversations::open(&path, TEST_LIMITS).unwrap();
        // Both queues' items expired at 1000: a third queue is admitted.
        assert!(store.publish(&[3; 32], b"c", 2000).is_ok());
        assert!(store.publish(&[4; 32], b"d", 2000).is_ok());
        assert!(matches!(
            store.publish(&[5; 32], b"e", 2000),
            Err(StoreError::StoreFull)
        ));
    }
}
