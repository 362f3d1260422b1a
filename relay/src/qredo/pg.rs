//! `Conversations` queues on PostgreSQL: with `--deaddrop-store postgres://...` they
//! live in the dead-drop's database (schema version 2 of `crate::deaddrop::pg`), on the
//! dead-drop's pool, so every node pointed at it serves the same queues and an item
//! survives the loss of the node that took it. The semantics are those of the redb
//! file ([`super::store`]): the same numbering, caps, charges and expiry.
//!
//! Every change is one transaction that first locks the single `qredo_totals` row, so
//! changes of all nodes are serialised and the caps (items per queue, queues, bytes)
//! hold across the cluster; a publish is answered only after its `COMMIT` returned.
//! Reads take no lock.
//!
//! Subscriptions across nodes: a publish also `NOTIFY`s [`CHANNEL`] with its origin,
//! queue and sequence value, delivered to every node at `COMMIT`. Each node `LISTEN`s on
//! a connection of its own ([`PgConversations::listen`]); for another node's item, and
//! only while the node has subscribers, it reads the item back and pushes it to them.
//! While that connection is down (it reconnects every [`RELISTEN`]) pushes of other
//! nodes' items are missed; `queryItems` still returns every item.

use super::store::{
    OVERHEAD_BYTES, QueueId, SWEEP_BATCH, StoreError, StoreLimits, StoredItem, Tally, first_seq,
};
use crate::deaddrop::pg::{PgAccess, int, pg};
use deadpool_postgres::Object;

/// The queues on the dead-drop's PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgConversations {
    access: PgAccess,
    limits: StoreLimits,
    /// This process's mark on its notifications (its own items are pushed locally).
    origin: u64,
}

/// The notification channel of committed publishes.
pub const CHANNEL: &str = "tryst_qredo_items";

/// The `application_name` of each node's `LISTEN` connection (in `pg_stat_activity`).
pub const LISTENER_NAME: &str = "tryst-qredo-listen";

/// How long a lost `LISTEN` connection waits before connecting again.
pub const RELISTEN: std::time::Duration = std::time::Duration::from_secs(1);

/// Notifications waiting to be read back, at most; beyond, they are dropped (counted).
const NOTIFY_BACKLOG: usize = 4096;

/// A notification's payload: `<origin, 16 hex> <queue, 64 hex> <seq, decimal>`.
pub fn notice(origin: u64, queue: &QueueId, seq: u64) -> String {
    format!("{origin:016x} {} {seq}", hex::encode(queue))
}

/// Reads a notification's payload back: (origin, queue, seq); `None` if it is not one
/// (anyone who may write to the database can `NOTIFY`: the fuzz target `qredo_notice`
/// runs this).
pub fn parse_notice(payload: &str) -> Option<(u64, QueueId, u64)> {
    let mut parts = payload.split(' ');
    let origin = u64::from_str_radix(parts.next()?, 16).ok()?;
    let mut queue = [0u8; 32];
    hex::decode_to_slice(parts.next()?, &mut queue).ok()?;
    let seq = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((origin, queue, seq))
}

fn db(e: crate::deaddrop::store::StoreError) -> StoreError {
    StoreError::Db(e.message)
}

/// A bigint column read back as the u64 it was written from.
fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Locks the totals row (serialising every change of every node) and reads
/// (bytes charged, queues holding items).
async fn lock_totals(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<(u64, u64), crate::deaddrop::store::StoreError> {
    let st = tx
        .prepare_cached("SELECT bytes, queues FROM qredo_totals WHERE id = 1 FOR UPDATE")
        .await
        .map_err(pg)?;
    let row = tx.query_one(&st, &[]).await.map_err(pg)?;
    Ok((uint(row.get(0)), uint(row.get(1))))
}

/// The queue's (next sequence value, items held), if it holds any.
async fn queue_row(
    tx: &deadpool_postgres::Transaction<'_>,
    queue: &QueueId,
) -> Result<Option<(u64, u64)>, crate::deaddrop::store::StoreError> {
    let st = tx
        .prepare_cached("SELECT next_seq, items FROM qredo_queues WHERE queue = $1")
        .await
        .map_err(pg)?;
    let row = tx.query_opt(&st, &[&queue.as_slice()]).await.map_err(pg)?;
    Ok(row.map(|r| (uint(r.get(0)), uint(r.get(1)))))
}

/// Deletes the queue's items matching `condition` (on `seq` as $2, `expires_at` as $3):
/// (items, bytes charged) freed.
async fn delete_items(
    tx: &deadpool_postgres::Transaction<'_>,
    queue: &QueueId,
    sql: &str,
    bound: i64,
) -> Result<(u64, u64), crate::deaddrop::store::StoreError> {
    let st = tx.prepare_cached(sql).await.map_err(pg)?;
    let row = tx
        .query_one(&st, &[&queue.as_slice(), &bound])
        .await
        .map_err(pg)?;
    let (n, bytes): (i64, i64) = (row.get(0), row.get(1));
    let n = uint(n);
    Ok((n, uint(bytes) + n * OVERHEAD_BYTES))
}

const PURGE_EXPIRED: &str = "WITH gone AS (DELETE FROM qredo_items \
     WHERE queue = $1 AND expires_at <= $2 RETURNING octet_length(item) AS len) \
     SELECT count(*), coalesce(sum(len), 0)::bigint FROM gone";

const DELETE_UP_TO: &str = "WITH gone AS (DELETE FROM qredo_items \
     WHERE queue = $1 AND seq <= $2 RETURNING octet_length(item) AS len) \
     SELECT count(*), coalesce(sum(len), 0)::bigint FROM gone";

/// Writes the queue's row (or removes it when it holds nothing) and the totals.
async fn settle(
    tx: &deadpool_postgres::Transaction<'_>,
    queue: &QueueId,
    next: u64,
    tally: Tally,
) -> Result<(), crate::deaddrop::store::StoreError> {
    if tally.count == 0 {
        let st = tx
            .prepare_cached("DELETE FROM qredo_queues WHERE queue = $1")
            .await
            .map_err(pg)?;
        tx.execute(&st, &[&queue.as_slice()]).await.map_err(pg)?;
    } else {
        let st = tx
            .prepare_cached(
                "INSERT INTO qredo_queues (queue, next_seq, items) VALUES ($1, $2, $3) \
                 ON CONFLICT (queue) DO UPDATE SET next_seq = $2, items = $3",
            )
            .await
            .map_err(pg)?;
        tx.execute(&st, &[&queue.as_slice(), &int(next), &int(tally.count)])
            .await
            .map_err(pg)?;
    }
    let st = tx
        .prepare_cached("UPDATE qredo_totals SET bytes = $1, queues = $2 WHERE id = 1")
        .await
        .map_err(pg)?;
    tx.execute(&st, &[&int(tally.bytes), &int(tally.queues)])
        .await
        .map_err(pg)?;
    Ok(())
}

/// Removes up to [`SWEEP_BATCH`] expired items of every queue but `except` (whose own
/// were just purged and whose row the caller is about to write), oldest first, and the
/// rows of queues that emptied: (bytes charged, queues) freed.
async fn sweep_expired(
    tx: &deadpool_postgres::Transaction<'_>,
    except: &QueueId,
    now_ms: u64,
) -> Result<(u64, u64), crate::deaddrop::store::StoreError> {
    let st = tx
        .prepare_cached(
            "WITH gone AS (DELETE FROM qredo_items WHERE (queue, seq) IN \
             (SELECT queue, seq FROM qredo_items WHERE expires_at <= $1 AND queue <> $2 \
              ORDER BY expires_at LIMIT $3) \
             RETURNING queue, octet_length(item) AS len) \
             SELECT queue, count(*), coalesce(sum(len), 0)::bigint FROM gone GROUP BY queue",
        )
        .await
        .map_err(pg)?;
    let batch = i64::try_from(SWEEP_BATCH).unwrap_or(i64::MAX);
    let rows = tx
        .query(&st, &[&int(now_ms), &except.as_slice(), &batch])
        .await
        .map_err(pg)?;
    if rows.is_empty() {
        return Ok((0, 0));
    }
    let (mut ids, mut counts, mut bytes) = (Vec::new(), Vec::new(), 0u64);
    for row in &rows {
        let (id, n, len): (Vec<u8>, i64, i64) = (row.get(0), row.get(1), row.get(2));
        ids.push(id);
        counts.push(n);
        bytes += uint(len) + uint(n) * OVERHEAD_BYTES;
    }
    let st = tx
        .prepare_cached(
            "UPDATE qredo_queues q SET items = q.items - g.n \
             FROM unnest($1::bytea[], $2::bigint[]) AS g(queue, n) WHERE q.queue = g.queue",
        )
        .await
        .map_err(pg)?;
    tx.execute(&st, &[&ids, &counts]).await.map_err(pg)?;
    let st = tx
        .prepare_cached("DELETE FROM qredo_queues WHERE items <= 0")
        .await
        .map_err(pg)?;
    let emptied = tx.execute(&st, &[]).await.map_err(pg)?;
    Ok((bytes, emptied))
}

/// What a publish transaction decided.
enum Published {
    Seq(u64),
    Refused(StoreError),
}

impl PgConversations {
    /// The queues on `access` (the dead-drop's store, already migrated).
    pub fn new(access: PgAccess, limits: StoreLimits) -> Self {
        Self {
            access,
            limits,
            origin: rand::random(),
        }
    }

    /// Listens for other nodes' publishes for as long as the store lives: while
    /// `wanted()` (this node has subscribers), each is read back and handed to
    /// `deliver(queue, seq, item)`. `dropped` counts notifications dropped because the
    /// backlog was full. Returns once the first `LISTEN` took effect (so a node serves
    /// no subscriber before it hears the others), or after `CONNECT_TIMEOUT` with a
    /// warning (it keeps trying).
    pub fn listen(
        &self,
        wanted: impl Fn() -> bool + Send + Sync + 'static,
        deliver: impl Fn(QueueId, u64, Vec<u8>) + Send + Sync + 'static,
        dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) {
        let (access, origin) = (self.access.clone(), self.origin);
        let (listening, first) = std::sync::mpsc::sync_channel(1);
        self.access.spawn(async move {
            loop {
                let result =
                    listen_once(&access, origin, &wanted, &deliver, &dropped, &listening).await;
                if let Err(e) = result {
                    tracing::warn!(
                        error = %e.message,
                        "qredo: listening for other nodes' conversation items failed; \
                         connecting again"
                    );
                }
                tokio::time::sleep(RELISTEN).await;
            }
        });
        if first
            .recv_timeout(crate::deaddrop::pg::CONNECT_TIMEOUT)
            .is_err()
        {
            tracing::warn!(
                "qredo: not yet listening for other nodes' conversation items; their \
                 pushes reach this node's subscribers once it is"
            );
        }
    }

    /// Appends `item` to `queue`, committed when this returns; its sequence number.
    pub async fn publish(
        &self,
        queue: &QueueId,
        item: &[u8],
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let (queue, item, limits, origin) = (*queue, item.to_vec(), self.limits, self.origin);
        let published = self
            .access
            .run(move |mut client: Object| async move {
                let tx = client.transaction().await.map_err(pg)?;
                let (bytes, queues) = lock_totals(&tx).await?;
                let (next, count) = queue_row(&tx, &queue)
                    .await?
                    // As in the redb file: a queue that emptied lost its row; numbered
                    // from the clock, it continues above its old values.
                    .unwrap_or_else(|| (first_seq(now_ms), 0));
                let mut tally = Tally {
                    count,
                    bytes,
                    queues,
                }
                .removed(delete_items(&tx, &queue, PURGE_EXPIRED, int(now_ms)).await?);
                match tally.refusal(&limits, item.len()) {
                    None => {}
                    Some(StoreError::StoreFull) => {
                        let (bytes, queues) = sweep_expired(&tx, &queue, now_ms).await?;
                        tally = tally.swept(bytes, queues);
                        if let Some(refused) = tally.refusal(&limits, item.len()) {
                            // Rolled back with the transaction: kept only with a publish.
                            return Ok(Published::Refused(refused));
                        }
                    }
                    Some(refused) => return Ok(Published::Refused(refused)),
                }
                let st = tx
                    .prepare_cached(
                        "INSERT INTO qredo_items (queue, seq, item, expires_at) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .await
                    .map_err(pg)?;
                let expires = int(now_ms.saturating_add(limits.item_ttl_ms));
                tx.execute(&st, &[&queue.as_slice(), &int(next), &item, &expires])
                    .await
                    .map_err(pg)?;
                settle(&tx, &queue, next + 1, tally.added(item.len())).await?;
                // Delivered to every listening node when (and only if) this commits.
                let st = tx
                    .prepare_cached("SELECT pg_notify($1, $2)")
                    .await
                    .map_err(pg)?;
                tx.execute(&st, &[&CHANNEL, &notice(origin, &queue, next)])
                    .await
                    .map_err(pg)?;
                tx.commit().await.map_err(pg)?;
                Ok(Published::Seq(next))
            })
            .await
            .map_err(db)?;
        match published {
            Published::Seq(seq) => Ok(seq),
            Published::Refused(e) => Err(e),
        }
    }

    /// Up to `limit` unexpired items of `queue` after `after`, and whether they are all
    /// there is.
    pub async fn query(
        &self,
        queue: &QueueId,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<(Vec<StoredItem>, bool), StoreError> {
        let queue = *queue;
        // One row more than asked says whether there is more.
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
        let rows = self
            .access
            .run(move |client: Object| async move {
                let st = client
                    .prepare_cached(
                        "SELECT seq, item FROM qredo_items \
                         WHERE queue = $1 AND seq > $2 AND expires_at > $3 \
                         ORDER BY seq LIMIT $4",
                    )
                    .await
                    .map_err(pg)?;
                let rows = client
                    .query(&st, &[&queue.as_slice(), &int(after), &int(now_ms), &fetch])
                    .await
                    .map_err(pg)?;
                Ok(rows
                    .iter()
                    .map(|r| StoredItem {
                        seq: uint(r.get(0)),
                        item: r.get(1),
                    })
                    .collect::<Vec<_>>())
            })
            .await
            .map_err(db)?;
        let mut items = rows;
        let all = items.len() <= limit;
        items.truncate(limit);
        Ok((items, all))
    }

    /// Removes every item of `queue` up to and including `up_to`, committed when this
    /// returns; the number removed (expired ones not counted).
    pub async fn acknowledge(
        &self,
        queue: &QueueId,
        up_to: u64,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let queue = *queue;
        self.access
            .run(move |mut client: Object| async move {
                let tx = client.transaction().await.map_err(pg)?;
                let (bytes, queues) = lock_totals(&tx).await?;
                let Some((next, count)) = queue_row(&tx, &queue).await? else {
                    return Ok(0);
                };
                let expired = delete_items(&tx, &queue, PURGE_EXPIRED, int(now_ms)).await?;
                let acked = delete_items(&tx, &queue, DELETE_UP_TO, int(up_to)).await?;
                let tally = Tally {
                    count,
                    bytes,
                    queues,
                }
                .removed((expired.0 + acked.0, expired.1 + acked.1));
                settle(&tx, &queue, next, tally).await?;
                tx.commit().await.map_err(pg)?;
                Ok(acked.0)
            })
            .await
            .map_err(db)
    }
}

/// One `LISTEN` connection's life: returns when it is lost.
async fn listen_once(
    access: &PgAccess,
    origin: u64,
    wanted: &(impl Fn() -> bool + Send + Sync),
    deliver: &(impl Fn(QueueId, u64, Vec<u8>) + Send + Sync),
    dropped: &std::sync::atomic::AtomicU64,
    listening: &std::sync::mpsc::SyncSender<()>,
) -> Result<(), crate::deaddrop::store::StoreError> {
    use futures_util::StreamExt as _;
    use tokio_postgres::AsyncMessage;
    let (client, mut connection) = access.connect(LISTENER_NAME).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(NOTIFY_BACKLOG);
    let driver = async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.try_send(n.payload().to_owned()).is_err() {
                        dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Ok(_) => {}
                Err(e) => return pg(e),
            }
        }
        crate::deaddrop::store::StoreError::unavailable("the LISTEN connection closed")
    };
    let reader = async {
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(pg)?;
        // Heard only by the first connection's caller; later ones find it gone or full.
        let _ = listening.try_send(());
        let st = client
            .prepare("SELECT item FROM qredo_items WHERE queue = $1 AND seq = $2")
            .await
            .map_err(pg)?;
        while let Some(payload) = rx.recv().await {
            let Some((from, queue, seq)) = parse_notice(&payload) else {
                continue;
            };
            if from == origin || !wanted() {
                continue;
            }
            // Gone already (acknowledged or expired): nothing to push.
            if let Some(row) = client
                .query_opt(&st, &[&queue.as_slice(), &int(seq)])
                .await
                .map_err(pg)?
            {
                deliver(queue, seq, row.get(0));
            }
        }
        Ok(())
    };
    tokio::select! {
        lost = driver => Err(lost),
        done = reader => done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deaddrop::pg::{PgStore, testing};
    use crate::deaddrop::store::{Reader, Store as _, StoreLimits as DropLimits};
    use crate::qredo::store::{ConversationStore, TEST_LIMITS, check_store};

    /// The same behaviour as the redb file, on a fresh database migrated by the
    /// dead-drop's store; "reopening" is a new pool, as another node would have.
    #[test]
    fn notices_round_trip_and_nothing_else_parses() {
        let q = [0xab; 32];
        assert_eq!(parse_notice(&notice(7, &q, 42)), Some((7, q, 42)));
        for bad in [
            "",
            "7",
            "7 ab 1",
            &format!("zz {} 1", hex::encode(q)),
            &(notice(7, &q, 42) + " x"),
        ] {
            assert_eq!(parse_notice(bad), None, "{bad}");
        }
    }

    #[test]
    fn publish_query_ack_expire_and_limits_on_postgres() {
        let url = testing::fresh_database().expect("TRYST_TEST_PG is set but unusable");
        let Some(url) = url else {
            eprintln!(
                "\n*** SKIPPED publish_query_ack_expire_and_limits_on_postgres: TRYST_TEST_PG \
                 is not set (./scripts/test.sh sets it) ***\n"
            );
            return;
        };
        let limits = DropLimits {
            max_pending: 8,
            max_mailboxes: 8,
            max_bytes: 1 << 20,
        };
        // Opened before the async test: opening blocks on the store's own runtime.
        let mut stores = Vec::new();
        let mut queues = Vec::new();
        for _ in 0..2 {
            let (store, _) = PgStore::open(&url, limits, 2, || Ok("key".into())).unwrap();
            let Reader::Postgres(access) = store.reader() else {
                panic!("a PostgreSQL store reads through PostgreSQL")
            };
            queues.push(ConversationStore::Postgres(PgConversations::new(
                access,
                TEST_LIMITS,
            )));
            stores.push(store);
        }
        let queues = std::sync::Mutex::new(queues);
        let open = || queues.lock().unwrap().remove(0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(check_store(open));
        // The store runtimes are dropped off the async context.
        drop(stores);
    }
}
