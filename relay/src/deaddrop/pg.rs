//! The dead-drop store on PostgreSQL (`--deaddrop-store postgres://...`): the same
//! [`Store`] semantics as the redb file, shared by every node pointed at one database.
//!
//! - A bounded `deadpool-postgres` pool on a small runtime of its own (one thread), so
//!   the writer thread can run a batch to completion while readers on the HTTP runtime
//!   use the same pool. Statements are prepared once per connection (`prepare_cached`).
//! - Group commit: the [`super::store::Writer`] hands each queued batch to [`PgStore`] as
//!   one transaction; every caller is answered after `COMMIT` returned. `BEGIN` and
//!   `COMMIT` are pipelined with the batch's statements, so a batch of deposits is two
//!   round trips however many it holds (see `apply_batch`). A batch takes a
//!   transaction-scoped advisory lock first, so batches of all nodes are serialised and
//!   the caps (per mailbox, mailboxes, bytes) hold across the cluster.
//! - Schema: versioned migrations in `deaddrop_schema`, applied on start under an
//!   advisory lock, so several nodes may start at once. The relay key every node serves
//!   at `/pubkey` is stored in `deaddrop_relay_key` by the first node that starts.
//! - Errors: a server that cannot be reached (connection refused or lost, shutting
//!   down, pool timeout) is [`StoreError::unavailable`] (503 to clients); nothing is
//!   acknowledged unless its transaction committed. Broken connections are dropped by
//!   the pool and new ones made on the next batch, so service resumes by itself.

use super::store::{
    Delivered, EXPIRE_BATCH, Full, Mailbox, NewMessage, OVERHEAD_BYTES, Op, Outcome, Reader, Store,
    StoreError, StoreLimits,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio_postgres::NoTls;

/// Connections the pool holds at most (the writer uses one at a time, readers the rest).
pub const DEFAULT_POOL_SIZE: usize = 4;
/// Connecting, and waiting for a pooled connection, give up after this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A batch (one transaction) gives up after this; its callers get 503.
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Advisory lock held while migrating (`tryst_m1` in ASCII).
const MIGRATE_LOCK: i64 = 0x7472_7973_745f_6d31;
/// Advisory lock every write batch takes first (`tryst_w1` in ASCII).
const WRITE_LOCK: i64 = 0x7472_7973_745f_7731;

/// How long a proof record outlives its window (seconds): the clock difference between
/// nodes it covers (a node whose clock is behind still accepts the proof as fresh).
pub const PROOF_RECORD_MARGIN: u64 = 300;
/// Most proof claims one statement records; more wait for the next one.
const MAX_CLAIMS: usize = 256;
/// Proof claims that may wait for the claimer; beyond it a request is answered as if
/// the database were unavailable (503), not queued without bound.
const CLAIM_QUEUE: usize = 4096;

/// The schema, one entry per version, applied in order, each once. Version 2 holds
/// Qredo's `Conversations` queues (`crate::qredo::pg`), which live in the dead-drop's
/// database when it is on PostgreSQL; version 3 the proofs every node has accepted
/// ([`PgAccess::first_use`]).
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE deaddrop_messages (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        mailbox bytea NOT NULL,
        deposit_id text NOT NULL UNIQUE,
        payload bytea NOT NULL,
        expires_at bigint NOT NULL
    );
    CREATE INDEX deaddrop_messages_mailbox ON deaddrop_messages (mailbox, seq);
    CREATE INDEX deaddrop_messages_expiry ON deaddrop_messages (expires_at);
    CREATE TABLE deaddrop_mailboxes (
        mailbox bytea PRIMARY KEY,
        pending bigint NOT NULL
    );
    CREATE TABLE deaddrop_totals (
        id integer PRIMARY KEY CHECK (id = 1),
        bytes bigint NOT NULL,
        mailboxes bigint NOT NULL
    );
    INSERT INTO deaddrop_totals (id, bytes, mailboxes) VALUES (1, 0, 0);
    CREATE TABLE deaddrop_relay_key (
        id integer PRIMARY KEY CHECK (id = 1),
        private_pem text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );",
    ),
    (
        2,
        "CREATE TABLE qredo_items (
        queue bytea NOT NULL,
        seq bigint NOT NULL,
        item bytea NOT NULL,
        expires_at bigint NOT NULL,
        PRIMARY KEY (queue, seq)
    );
    CREATE INDEX qredo_items_expiry ON qredo_items (expires_at);
    CREATE TABLE qredo_queues (
        queue bytea PRIMARY KEY,
        next_seq bigint NOT NULL,
        items bigint NOT NULL
    );
    CREATE TABLE qredo_totals (
        id integer PRIMARY KEY CHECK (id = 1),
        bytes bigint NOT NULL,
        queues bigint NOT NULL
    );
    INSERT INTO qredo_totals (id, bytes, queues) VALUES (1, 0, 0);",
    ),
    (
        3,
        "CREATE TABLE deaddrop_proofs (
        digest bytea PRIMARY KEY,
        until bigint NOT NULL
    );
    CREATE INDEX deaddrop_proofs_until ON deaddrop_proofs (until);",
    ),
];

/// The newest schema version this build knows.
pub fn schema_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// The parts of a store URL that are safe to print: never the password.
pub fn describe(url: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return "postgres (unparsable URL)".into();
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let mut out = format!("postgres host={}", hosts.join(","));
    if let Some(db) = config.get_dbname() {
        out.push_str(&format!(" dbname={db}"));
    }
    if let Some(user) = config.get_user() {
        out.push_str(&format!(" user={user}"));
    }
    out
}

pub(crate) fn pg(e: tokio_postgres::Error) -> StoreError {
    let message = match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", e, db.message(), db.code().code()),
        None => match std::error::Error::source(&e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    };
    // No SQLSTATE: the connection itself failed. Class 08 connection exception, 57
    // operator intervention (shutdown, cannot connect now), 53 insufficient
    // resources, 40 serialization/deadlock: the server, not the request.
    let server = match e.code() {
        None => true,
        Some(c) => ["08", "57", "53", "40"]
            .iter()
            .any(|class| c.code().starts_with(class)),
    };
    if server || e.is_closed() {
        StoreError::unavailable(message)
    } else {
        StoreError::failed(message)
    }
}

fn pool_err(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => pg(e),
        other => StoreError::unavailable(other.to_string()),
    }
}

pub(crate) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn charge(id_len: usize, payload_len: usize) -> u64 {
    (id_len + payload_len) as u64 + OVERHEAD_BYTES
}

/// The PostgreSQL-backed [`Store`].
pub struct PgStore {
    rt: tokio::runtime::Runtime,
    pool: Pool,
    /// How to connect (for connections of their own, outside the pool).
    config: std::sync::Arc<tokio_postgres::Config>,
    limits: StoreLimits,
    /// The proof claimer's queue ([`PgAccess::first_use`]) and what it did.
    claims: tokio::sync::mpsc::Sender<ClaimAsk>,
    claim_stats: std::sync::Arc<ClaimStats>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("pool", &self.pool.status())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://...` or `postgresql:///db?host=/socket/dir`),
    /// applies the migrations this build knows, and settles the relay key: the one
    /// stored in the database, or, if none is yet, the PKCS#8 PEM `offer_key` returns
    /// (stored for every other node). Returns the store and the relay key PEM.
    pub fn open(
        url: &str,
        limits: StoreLimits,
        pool_size: usize,
        offer_key: impl FnOnce() -> Result<String, StoreError>,
    ) -> Result<(Self, String), StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::failed(format!("dead-drop store URL: {e}")))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        if config.get_application_name().is_none() {
            config.application_name("tryst");
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tryst-deaddrop-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::failed(format!("starting the store runtime: {e}")))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::failed(format!("dead-drop store pool: {e}")))?;
        let key = rt.block_on(migrate(&pool, offer_key))?;
        let (claims, asks) = tokio::sync::mpsc::channel(CLAIM_QUEUE);
        let claim_stats = std::sync::Arc::new(ClaimStats::default());
        drop(rt.spawn(claimer(
            pool.clone(),
            asks,
            std::sync::Arc::clone(&claim_stats),
        )));
        Ok((
            Self {
                rt,
                pool,
                config: std::sync::Arc::new(config),
                limits,
                claims,
                claim_stats,
            },
            key,
        ))
    }
}

async fn migrate(
    pool: &Pool,
    offer_key: impl FnOnce() -> Result<String, StoreError>,
) -> Result<String, StoreError> {
    let mut client = pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .await
        .map_err(pg)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS deaddrop_schema (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(pg)?;
    let current: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM deaddrop_schema", &[])
        .await
        .map_err(pg)?
        .get(0);
    if current > schema_version() {
        return Err(StoreError::failed(format!(
            "the database's dead-drop schema is version {current}, newer than this tryst \
             knows ({}); upgrade tryst",
            schema_version()
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql).await.map_err(pg)?;
        tx.execute(
            "INSERT INTO deaddrop_schema (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(pg)?;
        tracing::info!(version, "dead-drop schema migrated");
    }
    let stored = tx
        .query_opt(
            "SELECT private_pem FROM deaddrop_relay_key WHERE id = 1",
            &[],
        )
        .await
        .map_err(pg)?;
    let pem = match stored {
        Some(row) => row.get(0),
        None => {
            let pem = offer_key()?;
            tx.execute(
                "INSERT INTO deaddrop_relay_key (id, private_pem) VALUES (1, $1)",
                &[&pem],
            )
            .await
            .map_err(pg)?;
            tracing::info!("dead-drop relay key stored in the database for every node");
            pem
        }
    };
    tx.commit().await.map_err(pg)?;
    Ok(pem)
}

/// Counters of one batch, read once under the write lock and written back before
/// `COMMIT` (as the redb store's `meta` and `pending` tables), and the deposits it
/// accepted but has not sent yet.
struct Batch<'t, 'o> {
    tx: &'t Conn,
    limits: StoreLimits,
    bytes: u64,
    mailboxes: u64,
    pending: HashMap<Mailbox, u64>,
    dirty: Vec<Mailbox>,
    totals_dirty: bool,
    /// Accepted deposits, inserted with the next statement that must see them (before
    /// a take, an ack or a sweep) or with the counters at the end of the batch.
    unsent: Vec<&'o NewMessage>,
}

/// The consecutive deposits at the start of `ops`.
fn run_at(ops: &[Op]) -> Vec<&NewMessage> {
    ops.iter()
        .map_while(|o| match o {
            Op::Deposit(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// What a run of deposits needs from the database: whether its ids are stored, and the
/// pending counts of its mailboxes this batch has not read yet.
struct Lookup<'o> {
    ids: Vec<&'o str>,
    unknown: Vec<&'o [u8]>,
}

/// The statements of the deposit path, prepared once per connection.
struct Statements {
    dup: tokio_postgres::Statement,
    counts: tokio_postgres::Statement,
    insert: tokio_postgres::Statement,
}

impl Statements {
    async fn prepare(tx: &Conn) -> Result<Self, StoreError> {
        Ok(Self {
            dup: tx
                .prepare_cached(
                    "SELECT deposit_id FROM deaddrop_messages WHERE deposit_id = ANY($1)",
                )
                .await
                .map_err(pg)?,
            counts: tx
                .prepare_cached(
                    "SELECT mailbox, pending FROM deaddrop_mailboxes WHERE mailbox = ANY($1)",
                )
                .await
                .map_err(pg)?,
            // `ORDER BY o`: rows are inserted, and so numbered (`seq`), in deposit order.
            insert: tx
                .prepare_cached(
                    "INSERT INTO deaddrop_messages (mailbox, deposit_id, payload, expires_at) \
                     SELECT m, d, p, e FROM unnest($1::bytea[], $2::text[], $3::bytea[], \
                     $4::bigint[]) WITH ORDINALITY AS t(m, d, p, e, o) ORDER BY o",
                )
                .await
                .map_err(pg)?,
        })
    }
}

/// The rows a [`Lookup`] found: stored ids, and `(mailbox, pending)` counts.
type Found = (Vec<tokio_postgres::Row>, Vec<tokio_postgres::Row>);

impl Lookup<'_> {
    /// Runs both queries (pipelined, in order). Nothing to look up: no round trip.
    async fn run(&self, tx: &Conn, st: &Statements) -> Result<Found, tokio_postgres::Error> {
        let stored = async {
            if self.ids.is_empty() {
                return Ok(Vec::new());
            }
            tx.query(&st.dup, &[&self.ids]).await
        };
        let counted = async {
            if self.unknown.is_empty() {
                return Ok(Vec::new());
            }
            tx.query(&st.counts, &[&self.unknown]).await
        };
        // `join!`, not `try_join!`: the first error in pipeline order is the cause (those
        // after it only say the transaction is aborted).
        let (stored, counted) = tokio::join!(biased; stored, counted);
        Ok((stored?, counted?))
    }
}

impl<'o> Batch<'_, 'o> {
    async fn pending(&mut self, mailbox: &Mailbox) -> Result<u64, StoreError> {
        if let Some(n) = self.pending.get(mailbox) {
            return Ok(*n);
        }
        let st = self
            .tx
            .prepare_cached("SELECT pending FROM deaddrop_mailboxes WHERE mailbox = $1")
            .await
            .map_err(pg)?;
        let n = self
            .tx
            .query_opt(&st, &[&mailbox.as_slice()])
            .await
            .map_err(pg)?
            .map_or(0, |r| r.get::<_, i64>(0).max(0).unsigned_abs());
        self.pending.insert(*mailbox, n);
        Ok(n)
    }

    fn set_pending(&mut self, mailbox: &Mailbox, n: u64) {
        self.pending.insert(*mailbox, n);
        if !self.dirty.contains(mailbox) {
            self.dirty.push(*mailbox);
        }
    }

    /// Accounts for `removed` messages of `mailbox` charged `bytes` in all.
    async fn removed(
        &mut self,
        mailbox: &Mailbox,
        removed: u64,
        bytes: u64,
    ) -> Result<(), StoreError> {
        if removed == 0 {
            return Ok(());
        }
        let left = self.pending(mailbox).await?.saturating_sub(removed);
        if left == 0 {
            self.mailboxes = self.mailboxes.saturating_sub(1);
        }
        self.set_pending(mailbox, left);
        self.bytes = self.bytes.saturating_sub(bytes);
        self.totals_dirty = true;
        Ok(())
    }

    async fn delete_seqs(&mut self, seqs: &[i64]) -> Result<u64, StoreError> {
        if seqs.is_empty() {
            return Ok(0);
        }
        let st = self
            .tx
            .prepare_cached("DELETE FROM deaddrop_messages WHERE seq = ANY($1)")
            .await
            .map_err(pg)?;
        self.tx.execute(&st, &[&seqs]).await.map_err(pg)
    }

    /// What `run` needs looked up.
    fn lookup(&self, run: &[&'o NewMessage]) -> Lookup<'o> {
        let mut unknown: Vec<&'o [u8]> = Vec::new();
        for m in run {
            if !self.pending.contains_key(&m.mailbox) && !unknown.contains(&m.mailbox.as_slice()) {
                unknown.push(m.mailbox.as_slice());
            }
        }
        Lookup {
            ids: run.iter().map(|m| m.deposit_id.as_str()).collect(),
            unknown,
        }
    }

    /// Decides a run of consecutive deposits, in order, from what `lookup` found and the
    /// counters read under the write lock, exactly as one deposit at a time would: a
    /// duplicate id (stored before, or earlier in the batch) is acknowledged again
    /// without a second copy, before any cap is checked. The accepted ones join
    /// `unsent`; the run costs no round trip of its own.
    fn deposits(
        &mut self,
        run: &[&'o NewMessage],
        lookup: &Lookup<'o>,
        (stored, counted): Found,
    ) -> Result<Vec<Outcome>, StoreError> {
        for mailbox in &lookup.unknown {
            let n = counted
                .iter()
                .find(|r| r.get::<_, &[u8]>(0) == *mailbox)
                .map_or(0, |r| r.get::<_, i64>(1).max(0).unsigned_abs());
            let mailbox: Mailbox = (*mailbox)
                .try_into()
                .map_err(|_| StoreError::failed("corrupt mailbox"))?;
            self.pending.insert(mailbox, n);
        }
        // Borrowed, not copied: the rows and the batch's deposits outlive the decisions.
        let mut stored: HashSet<&str> = stored.iter().map(|r| r.get::<_, &str>(0)).collect();
        stored.extend(self.unsent.iter().map(|m| {
            let m: &'o NewMessage = m;
            m.deposit_id.as_str()
        }));
        let mut out = Vec::with_capacity(run.len());
        for m in run {
            if stored.contains(m.deposit_id.as_str()) {
                // Already stored (a retried deposit): acknowledged again, not stored twice.
                out.push(Outcome::Deposited);
                continue;
            }
            let count = self.pending.get(&m.mailbox).copied().unwrap_or(0);
            if count >= self.limits.max_pending {
                out.push(Outcome::Refused(Full::Mailbox));
                continue;
            }
            if count == 0 && self.mailboxes >= self.limits.max_mailboxes {
                out.push(Outcome::Refused(Full::Mailboxes));
                continue;
            }
            let cost = charge(m.deposit_id.len(), m.payload.len());
            if self.bytes.saturating_add(cost) > self.limits.max_bytes {
                out.push(Outcome::Refused(Full::Bytes));
                continue;
            }
            stored.insert(&m.deposit_id);
            self.unsent.push(m);
            self.set_pending(&m.mailbox, count + 1);
            if count == 0 {
                self.mailboxes += 1;
            }
            self.bytes += cost;
            self.totals_dirty = true;
            out.push(Outcome::Deposited);
        }
        Ok(out)
    }

    /// One multi-row `INSERT` of the unsent deposits, in order.
    async fn insert(tx: &Conn, st: &Statements, unsent: &[&NewMessage]) -> Result<(), StoreError> {
        if unsent.is_empty() {
            return Ok(());
        }
        let mailboxes: Vec<&[u8]> = unsent.iter().map(|m| m.mailbox.as_slice()).collect();
        let ids: Vec<&str> = unsent.iter().map(|m| m.deposit_id.as_str()).collect();
        let payloads: Vec<&[u8]> = unsent.iter().map(|m| m.payload.as_bytes()).collect();
        let expiries: Vec<i64> = unsent.iter().map(|m| int(m.expires_at)).collect();
        let n = tx
            .execute(&st.insert, &[&mailboxes, &ids, &payloads, &expiries])
            .await
            .map_err(pg)?;
        if n != unsent.len() as u64 {
            return Err(StoreError::failed(format!(
                "inserted {n} of {} deposits",
                unsent.len()
            )));
        }
        Ok(())
    }

    /// Inserts the unsent deposits now (before an op that must see them).
    async fn send(&mut self, st: &Statements) -> Result<(), StoreError> {
        let unsent = std::mem::take(&mut self.unsent);
        Self::insert(self.tx, st, &unsent).await
    }

    async fn take(
        &mut self,
        mailbox: &Mailbox,
        now: u64,
        delete: bool,
    ) -> Result<Outcome, StoreError> {
        if delete {
            return self.take_all(mailbox, now).await;
        }
        let list = self
            .tx
            .prepare_cached(
                "SELECT seq, deposit_id, payload, expires_at FROM deaddrop_messages \
                 WHERE mailbox = $1 ORDER BY seq",
            )
            .await
            .map_err(pg)?;
        let rows = self
            .tx
            .query(&list, &[&mailbox.as_slice()])
            .await
            .map_err(pg)?;
        let mut out = Vec::new();
        let mut gone = Vec::new();
        let mut gone_bytes = 0;
        for row in rows {
            let seq: i64 = row.get(0);
            let deposit_id: String = row.get(1);
            let payload = String::from_utf8(row.get(2))
                .map_err(|_| StoreError::failed("corrupt message record"))?;
            let expires_at: i64 = row.get(3);
            let live = expires_at.max(0).unsigned_abs() > now;
            if !live || delete {
                gone.push(seq);
                gone_bytes += charge(deposit_id.len(), payload.len());
            }
            if live {
                out.push(Delivered {
                    deposit_id,
                    payload,
                });
            }
        }
        let n = self.delete_seqs(&gone).await?;
        self.removed(mailbox, n, gone_bytes).await?;
        Ok(Outcome::Messages(out))
    }

    /// Delete-on-read: every message of the mailbox goes, live or expired, with one
    /// statement that returns them (the live ones oldest first are the answer), and the
    /// mailbox is empty afterwards: no count to look up.
    async fn take_all(&mut self, mailbox: &Mailbox, now: u64) -> Result<Outcome, StoreError> {
        let st = self
            .tx
            .prepare_cached(
                "DELETE FROM deaddrop_messages WHERE mailbox = $1 \
                 RETURNING seq, deposit_id, payload, expires_at",
            )
            .await
            .map_err(pg)?;
        let mut rows = self
            .tx
            .query(&st, &[&mailbox.as_slice()])
            .await
            .map_err(pg)?;
        rows.sort_unstable_by_key(|r| r.get::<_, i64>(0));
        let mut out = Vec::with_capacity(rows.len());
        let mut gone_bytes = 0;
        for row in &rows {
            let deposit_id: String = row.get(1);
            let payload = String::from_utf8(row.get(2))
                .map_err(|_| StoreError::failed("corrupt message record"))?;
            gone_bytes += charge(deposit_id.len(), payload.len());
            if row.get::<_, i64>(3).max(0).unsigned_abs() > now {
                out.push(Delivered {
                    deposit_id,
                    payload,
                });
            }
        }
        if !rows.is_empty() {
            self.mailboxes = self.mailboxes.saturating_sub(1);
            self.set_pending(mailbox, 0);
            self.bytes = self.bytes.saturating_sub(gone_bytes);
            self.totals_dirty = true;
        }
        Ok(Outcome::Messages(out))
    }

    async fn ack(&mut self, mailbox: &Mailbox, ids: &[String]) -> Result<Outcome, StoreError> {
        if ids.is_empty() {
            return Ok(Outcome::Removed(0));
        }
        let st = self
            .tx
            .prepare_cached(
                "DELETE FROM deaddrop_messages WHERE mailbox = $1 AND deposit_id = ANY($2) \
                 RETURNING octet_length(deposit_id) + octet_length(payload)",
            )
            .await
            .map_err(pg)?;
        let rows = self
            .tx
            .query(&st, &[&mailbox.as_slice(), &ids])
            .await
            .map_err(pg)?;
        let bytes: u64 = rows
            .iter()
            .map(|r| u64::from(r.get::<_, i32>(0).unsigned_abs()) + OVERHEAD_BYTES)
            .sum();
        self.removed(mailbox, rows.len() as u64, bytes).await?;
        Ok(Outcome::Removed(rows.len()))
    }

    async fn expire(&mut self, now: u64) -> Result<Outcome, StoreError> {
        let st = self
            .tx
            .prepare_cached(
                "DELETE FROM deaddrop_messages WHERE seq IN (SELECT seq FROM deaddrop_messages \
                 WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2) \
                 RETURNING mailbox, octet_length(deposit_id) + octet_length(payload)",
            )
            .await
            .map_err(pg)?;
        let rows = self
            .tx
            .query(&st, &[&int(now), &int(EXPIRE_BATCH as u64)])
            .await
            .map_err(pg)?;
        let mut per: HashMap<Mailbox, (u64, u64)> = HashMap::new();
        for r in &rows {
            let mailbox: Mailbox = r
                .get::<_, &[u8]>(0)
                .try_into()
                .map_err(|_| StoreError::failed("corrupt mailbox"))?;
            let e = per.entry(mailbox).or_default();
            e.0 += 1;
            e.1 += u64::from(r.get::<_, i32>(1).unsigned_abs()) + OVERHEAD_BYTES;
        }
        for (mailbox, (n, bytes)) in per {
            self.removed(&mailbox, n, bytes).await?;
        }
        // Proof records whose window passed PROOF_RECORD_MARGIN ago: every node
        // refuses the proof as stale by then, even one whose clock is that much behind
        // this node's.
        let proofs = self
            .tx
            .prepare_cached("DELETE FROM deaddrop_proofs WHERE until < $1")
            .await
            .map_err(pg)?;
        let before = int(now.saturating_sub(PROOF_RECORD_MARGIN));
        self.tx.execute(&proofs, &[&before]).await.map_err(pg)?;
        Ok(Outcome::Removed(rows.len()))
    }

    /// Writes the unsent deposits and the batch's changed counters (every changed
    /// mailbox count and the totals), then `COMMIT`, all in one round trip (pipelined,
    /// executed in order). A statement that fails aborts the transaction, so the
    /// `COMMIT` behind it only rolls back; its error is what this returns.
    async fn finish_and_commit(&mut self, st: &Statements) -> Result<(), StoreError> {
        let put = self
            .tx
            .prepare_cached(
                "INSERT INTO deaddrop_mailboxes (mailbox, pending) \
                 SELECT * FROM unnest($1::bytea[], $2::bigint[]) \
                 ON CONFLICT (mailbox) DO UPDATE SET pending = EXCLUDED.pending",
            )
            .await
            .map_err(pg)?;
        let del = self
            .tx
            .prepare_cached("DELETE FROM deaddrop_mailboxes WHERE mailbox = ANY($1)")
            .await
            .map_err(pg)?;
        let totals = self
            .tx
            .prepare_cached("UPDATE deaddrop_totals SET bytes = $1, mailboxes = $2 WHERE id = 1")
            .await
            .map_err(pg)?;
        let dirty = std::mem::take(&mut self.dirty);
        let (mut kept, mut counts, mut emptied) = (Vec::new(), Vec::new(), Vec::new());
        for mailbox in &dirty {
            match self.pending.get(mailbox).copied().unwrap_or(0) {
                0 => emptied.push(mailbox.as_slice()),
                n => {
                    kept.push(mailbox.as_slice());
                    counts.push(int(n));
                }
            }
        }
        let tx = self.tx;
        let unsent = std::mem::take(&mut self.unsent);
        let (bytes, mailboxes) = (int(self.bytes), int(self.mailboxes));
        let puts = async {
            if kept.is_empty() {
                return Ok(0);
            }
            tx.execute(&put, &[&kept, &counts]).await.map_err(pg)
        };
        let dels = async {
            if emptied.is_empty() {
                return Ok(0);
            }
            tx.execute(&del, &[&emptied]).await.map_err(pg)
        };
        let sums = async {
            if !self.totals_dirty {
                return Ok(0);
            }
            tx.execute(&totals, &[&bytes, &mailboxes]).await.map_err(pg)
        };
        let commit = async { tx.batch_execute("COMMIT").await.map_err(pg) };
        // Every answer is awaited; the first error in pipeline order is the cause (the
        // statements after a failed one, `COMMIT` included, only report or perform the
        // rollback).
        let (inserted, puts, dels, sums, commit) =
            tokio::join!(biased; Self::insert(tx, st, &unsent), puts, dels, sums, commit);
        inserted?;
        puts?;
        dels?;
        sums?;
        commit?;
        Ok(())
    }
}

/// A pooled connection for one batch. The transaction is begun with a plain `BEGIN`
/// (not `tokio_postgres::Transaction`) so that `BEGIN` and `COMMIT` share round trips
/// with the batch's statements. Unless [`Conn::committed`] is called, dropping it takes
/// the connection out of the pool and closes it (the server rolls the transaction
/// back): a connection left inside a transaction, or inside one a failed statement
/// aborted, or with answers still unread after a timeout, is never handed out again.
struct Conn(Option<deadpool_postgres::Client>);

impl std::ops::Deref for Conn {
    type Target = deadpool_postgres::ClientWrapper;

    fn deref(&self) -> &Self::Target {
        // Only `committed` and `drop` take the client out, and both consume the guard.
        self.0.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl Conn {
    /// `COMMIT` returned: the connection goes back to the pool.
    fn committed(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

/// One batch as one transaction. Round trips: `BEGIN`, the write lock, the totals and
/// the first run of deposits' lookups (pipelined); one more lookup per later run of
/// deposits; the unsent deposits before each take, ack or sweep, and each of those;
/// the unsent deposits with the counters and `COMMIT` (pipelined). A batch of deposits
/// alone is two round trips, however many it holds (the statements are prepared once
/// per connection).
async fn apply_batch(
    pool: &Pool,
    ops: &[Op],
    limits: StoreLimits,
) -> Result<Vec<Outcome>, StoreError> {
    let tx = Conn(Some(pool.get().await.map_err(pool_err)?));
    let lock = tx
        .prepare_cached("SELECT pg_advisory_xact_lock($1)")
        .await
        .map_err(pg)?;
    let totals = tx
        .prepare_cached("SELECT bytes, mailboxes FROM deaddrop_totals WHERE id = 1")
        .await
        .map_err(pg)?;
    let st = Statements::prepare(&tx).await?;
    let mut batch = Batch {
        tx: &tx,
        limits,
        bytes: 0,
        mailboxes: 0,
        pending: HashMap::new(),
        dirty: Vec::new(),
        totals_dirty: false,
        unsent: Vec::new(),
    };
    let first = run_at(ops);
    let lookup = batch.lookup(&first);
    // Pipelined, executed in order (tokio-postgres sends a request when its future is
    // first polled, and `biased` polls them in the order written): the totals and the
    // lookups are read (statements of their own, so snapshots taken after the lock was
    // granted) only once this node holds the lock, inside the transaction `BEGIN` opened.
    let (begun, locked, row, found) = tokio::join!(
        biased;
        tx.batch_execute("BEGIN"),
        tx.execute(&lock, &[&WRITE_LOCK]),
        tx.query_one(&totals, &[]),
        lookup.run(&tx, &st)
    );
    // The first error in pipeline order is the cause.
    begun.map_err(pg)?;
    locked.map_err(pg)?;
    let (row, found) = (row.map_err(pg)?, found.map_err(pg)?);
    batch.bytes = row.get::<_, i64>(0).max(0).unsigned_abs();
    batch.mailboxes = row.get::<_, i64>(1).max(0).unsigned_abs();
    let mut out = Vec::with_capacity(ops.len());
    out.extend(batch.deposits(&first, &lookup, found)?);
    let mut rest = &ops[first.len()..];
    while let Some(op) = rest.first() {
        // Consecutive deposits are decided together; every other op sees the state the
        // ops before it left (the unsent deposits go first), as one op at a time would.
        let run = run_at(rest);
        if !run.is_empty() {
            let lookup = batch.lookup(&run);
            let found = lookup.run(&tx, &st).await.map_err(pg)?;
            out.extend(batch.deposits(&run, &lookup, found)?);
            rest = &rest[run.len()..];
            continue;
        }
        batch.send(&st).await?;
        out.push(match op {
            Op::Deposit(_) => unreachable!("deposits are decided as runs above"),
            Op::Take {
                mailbox,
                now,
                delete,
            } => batch.take(mailbox, *now, *delete).await?,
            Op::Ack { mailbox, ids } => batch.ack(mailbox, ids).await?,
            Op::Expire { now } => batch.expire(*now).await?,
        });
        rest = &rest[1..];
    }
    batch.finish_and_commit(&st).await?;
    drop(batch);
    tx.committed();
    Ok(out)
}

impl Store for PgStore {
    fn apply(&mut self, ops: &[Op]) -> Result<Vec<Outcome>, StoreError> {
        let (pool, limits) = (&self.pool, self.limits);
        self.rt.block_on(async {
            tokio::time::timeout(BATCH_TIMEOUT, apply_batch(pool, ops, limits))
                .await
                .unwrap_or_else(|_| Err(StoreError::unavailable("store batch timed out")))
        })
    }

    fn recover(&mut self) -> Result<(), StoreError> {
        // After a failed batch, drop the idle connections: one that silently lost its
        // server (a failover, a partition) would otherwise be handed out again and time
        // out again. The next batch connects afresh.
        self.pool.retain(|_, _| false);
        Ok(())
    }

    fn reader(&self) -> Reader {
        Reader::Postgres(PgAccess {
            rt: self.rt.handle().clone(),
            pool: self.pool.clone(),
            config: std::sync::Arc::clone(&self.config),
            claims: self.claims.clone(),
            claim_stats: std::sync::Arc::clone(&self.claim_stats),
        })
    }
}

/// What [`PgAccess::first_use`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// No node had recorded the proof: this request may use it.
    pub first: bool,
    /// Whether the mailbox asked about holds a live message (`None`: none asked).
    pub live: Option<bool>,
}

/// What the proof claimer did, for `/metrics`: how many requests' proofs it recorded
/// and in how many statements (their ratio is the batching).
#[derive(Debug, Default)]
pub struct ClaimStats {
    /// Requests whose proof a statement answered.
    pub claims: std::sync::atomic::AtomicU64,
    /// Statements that answered them.
    pub statements: std::sync::atomic::AtomicU64,
}

/// The store's pool and the runtime its connections live on: queries from any runtime
/// (the dead-drop's reads, and Qredo's `Conversations`, which share the database).
/// Cheap to clone.
#[derive(Clone)]
pub struct PgAccess {
    rt: tokio::runtime::Handle,
    pool: Pool,
    config: std::sync::Arc<tokio_postgres::Config>,
    claims: tokio::sync::mpsc::Sender<ClaimAsk>,
    claim_stats: std::sync::Arc<ClaimStats>,
}

impl std::fmt::Debug for PgAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAccess").finish_non_exhaustive()
    }
}

/// The SQL question "does the mailbox (parameter `$mailbox`) hold a message live at
/// unix second `$now`?", one text for every statement that asks it.
macro_rules! holds_live {
    ($mailbox:literal, $now:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM deaddrop_messages WHERE mailbox = ",
            $mailbox,
            " AND expires_at > ",
            $now,
            ")"
        )
    };
}

impl PgAccess {
    /// Runs `work` with a pooled connection on the store's runtime, where the pooled
    /// connections' tasks live; gives up after [`BATCH_TIMEOUT`] (unavailable).
    pub async fn run<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let pool = self.pool.clone();
        let task = self.rt.spawn(async move {
            let client = pool.get().await.map_err(pool_err)?;
            work(client).await
        });
        match tokio::time::timeout(BATCH_TIMEOUT, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(StoreError::unavailable(format!("store task: {e}"))),
            Err(_) => Err(StoreError::unavailable("store request timed out")),
        }
    }

    /// Runs `task` on the store's runtime for as long as the store lives (e.g. a
    /// connection of its own from [`PgAccess::connect`]).
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.rt.spawn(task));
    }

    /// A connection of its own, outside the pool (e.g. to `LISTEN`), named
    /// `application_name` in `pg_stat_activity`: the client and the connection future,
    /// which the caller drives on the store's runtime.
    pub async fn connect(
        &self,
        application_name: &str,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
        ),
        StoreError,
    > {
        let mut config = (*self.config).clone();
        config.application_name(application_name);
        config.connect(NoTls).await.map_err(pg)
    }

    /// What the proof claimer did so far ([`PgAccess::first_use`]).
    pub fn claim_stats(&self) -> &ClaimStats {
        &self.claim_stats
    }

    /// Records the dead-drop proof whose signature hashes to `digest` as used until
    /// unix second `until` (the end of its window): [`Claim::first`] is `false` when
    /// any node recorded it first (a replay). With `mailbox_at` (a retrieve's mailbox
    /// and `now`), the same statement also answers [`Reader::has_live`]'s question, so
    /// a retrieve's proof costs no round trip of its own. The insert has committed when
    /// this returns, so every node sharing the database refuses the proof from then on;
    /// the writer's sweep deletes the records whose window has passed. Concurrent
    /// requests' proofs share one statement (the store's claimer task); with 4096
    /// claims already waiting, a request is answered unavailable.
    ///
    /// The commit is asynchronous (`synchronous_commit` off for this one statement's
    /// transaction): visible to every node at once, but not waiting for the WAL flush,
    /// which would cost each retrieve a disk flush of its own. A database crash can
    /// lose the records of the last moment (at most three `wal_writer_delay`s, 600 ms by
    /// default), whose proofs could then be used once more within their window.
    ///
    /// [`Reader::has_live`]: super::store::Reader::has_live
    pub async fn first_use(
        &self,
        digest: [u8; 32],
        until: u64,
        mailbox_at: Option<(Mailbox, u64)>,
    ) -> Result<Claim, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let ask = ClaimAsk {
            asked: Asked {
                digest,
                until: int(until),
                mailbox_at: mailbox_at.map(|(mailbox, now)| (mailbox, int(now))),
            },
            reply,
        };
        self.claims.try_send(ask).map_err(|e| match e {
            tokio::sync::mpsc::error::TrySendError::Full(_) => {
                StoreError::unavailable("too many proof claims waiting")
            }
            tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                StoreError::unavailable("the proof claimer stopped")
            }
        })?;
        match tokio::time::timeout(BATCH_TIMEOUT, answer).await {
            Ok(Ok(claim)) => claim,
            Ok(Err(_)) => Err(StoreError::unavailable("the proof claimer stopped")),
            Err(_) => Err(StoreError::unavailable("store request timed out")),
        }
    }

    pub(super) async fn has_live(&self, mailbox: &Mailbox, now: u64) -> Result<bool, StoreError> {
        let (mailbox, now) = (*mailbox, int(now));
        self.run(move |client| async move {
            let st = client
                .prepare_cached(concat!("SELECT ", holds_live!("$1", "$2")))
                .await
                .map_err(pg)?;
            let row = client
                .query_one(&st, &[&mailbox.as_slice(), &now])
                .await
                .map_err(pg)?;
            Ok(row.get::<_, bool>(0))
        })
        .await
    }
}

/// What one request claims: its proof's digest, the end of the proof's window, and the
/// mailbox (with `now`) whose read-first question rides along.
#[derive(Debug, Clone, Copy)]
struct Asked {
    digest: [u8; 32],
    until: i64,
    mailbox_at: Option<(Mailbox, i64)>,
}

/// One request's proof claim, waiting for the claimer ([`PgAccess::first_use`]).
pub(crate) struct ClaimAsk {
    asked: Asked,
    reply: tokio::sync::oneshot::Sender<Result<Claim, StoreError>>,
}

/// Records the proofs of concurrent requests together: everything queued when the
/// last statement returned goes into the next one (up to [`MAX_CLAIMS`]), so `C` busy
/// clients cost one statement (one round trip, one transaction, one backend wake-up)
/// per turn instead of `C`. A lone request waits for nothing. Each statement runs as
/// a task of its own, so a panic or a timeout fails its batch, not the claimer. Runs on
/// the store's runtime until the store drops it or every sender is gone.
async fn claimer(
    pool: Pool,
    mut asks: tokio::sync::mpsc::Receiver<ClaimAsk>,
    stats: std::sync::Arc<ClaimStats>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut batch = Vec::with_capacity(MAX_CLAIMS);
    while asks.recv_many(&mut batch, MAX_CLAIMS).await > 0 {
        // A caller that stopped waiting (it answered 503 at its timeout) is not
        // recorded: its client's retry with the same proof would be refused as a
        // replay of a request that was never served.
        batch.retain(|ask: &ClaimAsk| !ask.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let asked: Vec<Asked> = batch.iter().map(|ask| ask.asked).collect();
        let mut task = tokio::spawn(claim_all(pool.clone(), asked));
        let found = match tokio::time::timeout(BATCH_TIMEOUT, &mut task).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => Err(StoreError::unavailable(format!("proof claim task: {e}"))),
            Err(_) => {
                task.abort();
                Err(StoreError::unavailable("store request timed out"))
            }
        };
        match found {
            Ok(claims) => {
                stats.statements.fetch_add(1, Relaxed);
                stats.claims.fetch_add(batch.len() as u64, Relaxed);
                for (ask, claim) in batch.drain(..).zip(claims) {
                    let _ = ask.reply.send(Ok(claim));
                }
            }
            Err(e) => {
                for ask in batch.drain(..) {
                    let _ = ask.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// The claims of `asked`, in its order, from one statement. A digest asked twice is
/// recorded once: its first ask gets what the database says, the later ones are
/// replays. The digests go to the database in ascending order, so two nodes' batches
/// that share proofs take their row locks in the same order and wait for each other
/// instead of deadlocking.
async fn claim_all(pool: Pool, asked: Vec<Asked>) -> Result<Vec<Claim>, StoreError> {
    /// Claims every proof of the arrays (asynchronous commit, as
    /// [`PgAccess::first_use`] says, in the arrays' order), and answers for each
    /// element, numbered from 1: whether it inserted, and the read-first answer for
    /// its mailbox (NULL: none asked).
    const CLAIM_ALL: &str = concat!(
        "WITH asynchronous AS \
         (SELECT set_config('synchronous_commit', 'off', true)), \
         asked AS (SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bytea[], \
         $4::bigint[]) WITH ORDINALITY AS a(digest, until, mailbox, now, row)), \
         claimed AS (INSERT INTO deaddrop_proofs (digest, until) \
         SELECT digest, until FROM asked, asynchronous ORDER BY row \
         ON CONFLICT (digest) DO NOTHING RETURNING digest) \
         SELECT a.row, a.digest IN (SELECT digest FROM claimed), \
         CASE WHEN a.mailbox IS NULL THEN NULL ELSE ",
        holds_live!("a.mailbox", "a.now"),
        " END FROM asked a"
    );
    // Each distinct digest, ascending, with the index of its first ask.
    let mut first_ask = std::collections::BTreeMap::new();
    for (i, ask) in asked.iter().enumerate() {
        first_ask.entry(ask.digest).or_insert(i);
    }
    let order: Vec<[u8; 32]> = first_ask.keys().copied().collect();
    let firsts: Vec<&Asked> = first_ask.values().map(|&i| &asked[i]).collect();
    let digests: Vec<&[u8]> = order.iter().map(<[u8; 32]>::as_slice).collect();
    let untils: Vec<i64> = firsts.iter().map(|a| a.until).collect();
    let mailboxes: Vec<Option<&[u8]>> = firsts
        .iter()
        .map(|a| a.mailbox_at.as_ref().map(|(m, _)| m.as_slice()))
        .collect();
    let nows: Vec<Option<i64>> = firsts
        .iter()
        .map(|a| a.mailbox_at.map(|(_, now)| now))
        .collect();
    let client = pool.get().await.map_err(pool_err)?;
    let st = client.prepare_cached(CLAIM_ALL).await.map_err(pg)?;
    let rows = client
        .query(&st, &[&digests, &untils, &mailboxes, &nows])
        .await
        .map_err(pg)?;
    let mut found: Vec<Option<Claim>> = vec![None; order.len()];
    for row in rows {
        let slot = usize::try_from(row.get::<_, i64>(0))
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| found.get_mut(i));
        if let Some(slot) = slot {
            *slot = Some(Claim {
                first: row.get(1),
                live: row.get(2),
            });
        }
    }
    let missing = || StoreError::failed("the proof claim statement left out a proof");
    asked
        .iter()
        .enumerate()
        .map(|(i, ask)| {
            let row = order.binary_search(&ask.digest).map_err(|_| missing())?;
            let claim = found[row].ok_or_else(missing)?;
            Ok(Claim {
                first: claim.first && first_ask.get(&ask.digest) == Some(&i),
                live: ask.mailbox_at.and(claim.live),
            })
        })
        .collect()
}

/// Helpers for tests (unit, integration, benchmarks): a throw-away database on the
/// cluster scripts/pg-test.sh starts.
#[doc(hidden)]
pub mod testing {
    use super::StoreError;

    /// The variable naming the test cluster's unix socket directory; set by
    /// scripts/test.sh (CI). Unset: PostgreSQL tests report themselves skipped.
    pub const SOCKET_ENV: &str = "TRYST_TEST_PG";

    /// The URL of a new, empty database on the test cluster at `socket_dir`.
    pub fn fresh_database_at(socket_dir: &str) -> Result<String, StoreError> {
        let name = format!("tryst_{:016x}", rand::random::<u64>());
        let admin = format!("postgresql:///postgres?host={socket_dir}&user=postgres");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::failed(e.to_string()))?;
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                .await
                .map_err(super::pg)?;
            let conn = tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .map_err(super::pg)?;
            drop(client);
            let _ = conn.await;
            Ok::<_, StoreError>(())
        })?;
        Ok(format!(
            "postgresql:///{name}?host={socket_dir}&user=postgres"
        ))
    }

    /// A new database on the cluster `TRYST_TEST_PG` names: `None` when the variable is
    /// unset (the caller reports the test skipped); an error when it is set but the
    /// cluster cannot be used (the test must fail: CI sets it).
    pub fn fresh_database() -> Result<Option<String>, StoreError> {
        match std::env::var(SOCKET_ENV) {
            Ok(dir) if !dir.is_empty() => fresh_database_at(&dir).map(Some),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    const LIMITS: StoreLimits = StoreLimits {
        max_pending: 8,
        max_mailboxes: 8,
        max_bytes: 1 << 20,
    };

    fn database(test: &str) -> Option<String> {
        let url =
            testing::fresh_database().expect("TRYST_TEST_PG is set but its cluster is unusable");
        if url.is_none() {
            eprintln!(
                "\n*** SKIPPED {test}: TRYST_TEST_PG is not set (./scripts/test.sh sets it) ***\n"
            );
        }
        url
    }

    /// A store on a fresh database for `test` (with the default relay key offer) and
    /// its access handle; `None` when the test is skipped.
    fn store_with_access(test: &str) -> Option<(PgStore, PgAccess)> {
        let url = database(test)?;
        let (store, _) = PgStore::open(&url, LIMITS, 2, || Ok(String::new())).unwrap();
        let Reader::Postgres(access) = store.reader() else {
            unreachable!("a PostgreSQL store reads through PostgreSQL")
        };
        Some((store, access))
    }

    /// Several nodes starting at once on an empty database: one migrates, all agree on
    /// the first stored relay key; a later start migrates nothing and offers no key.
    #[test]
    fn nodes_starting_at_once_migrate_once_and_share_one_key() {
        let Some(url) = database("nodes_starting_at_once_migrate_once_and_share_one_key") else {
            return;
        };
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let nodes: Vec<_> = (0..4)
            .map(|i| {
                let (url, barrier) = (url.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    let (_store, key) =
                        PgStore::open(&url, LIMITS, 2, || Ok(format!("key of node {i}"))).unwrap();
                    key
                })
            })
            .collect();
        let keys: Vec<String> = nodes.into_iter().map(|n| n.join().unwrap()).collect();
        assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
        assert!(keys[0].starts_with("key of node "));
        let (store, key) = PgStore::open(&url, LIMITS, 2, || {
            Err(StoreError::failed("the key is already stored: not asked"))
        })
        .unwrap();
        assert_eq!(key, keys[0]);
        let versions: Vec<i32> = store.rt.block_on(async {
            let c = store.pool.get().await.unwrap();
            c.query("SELECT version FROM deaddrop_schema ORDER BY version", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect()
        });
        assert_eq!(versions, (1..=schema_version()).collect::<Vec<_>>());
    }

    /// No server behind the URL: refused as unavailable (503 to clients), not as a
    /// failure of the store.
    #[test]
    fn unreachable_server_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "postgresql:///nothing?host={}&user=postgres",
            dir.path().display()
        );
        let e = PgStore::open(&url, LIMITS, 1, || Ok(String::new())).unwrap_err();
        assert!(e.unavailable, "{e}");
    }

    /// A proof is a first use once in one database, whichever node asks; a retrieve's
    /// claim also says whether the mailbox holds live mail; the sweep drops records
    /// whose window has passed (the proof is then refused as stale anyway).
    #[test]
    fn a_proof_is_claimed_once_and_swept_after_its_window() {
        let Some((mut store, access)) =
            store_with_access("a_proof_is_claimed_once_and_swept_after_its_window")
        else {
            return;
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let claim = |digest: u8, until: u64, mailbox_at: Option<(Mailbox, u64)>| {
            rt.block_on(access.first_use([digest; 32], until, mailbox_at))
                .unwrap()
        };
        assert_eq!(
            claim(1, 100, None),
            Claim {
                first: true,
                live: None
            }
        );
        assert_eq!(
            claim(1, 100, Some(([3; 32], 50))),
            Claim {
                first: false,
                live: Some(false)
            }
        );
        store.apply(&[deposit(3, "m")]).unwrap();
        assert_eq!(
            claim(2, 100, Some(([3; 32], 50))),
            Claim {
                first: true,
                live: Some(true)
            }
        );
        // Window ended at 100: kept through the margin for slower clocks, swept after.
        let sweep = |store: &mut PgStore, now| store.apply(&[Op::Expire { now }]).unwrap();
        sweep(&mut store, 100 + PROOF_RECORD_MARGIN);
        assert!(!claim(1, 200, None).first);
        sweep(&mut store, 101 + PROOF_RECORD_MARGIN);
        assert!(claim(1, 200, None).first);
    }

    /// Claims that meet in one statement: each distinct proof recorded once, a digest
    /// asked twice in the batch first only for its first ask, a proof recorded before
    /// a replay, and each ask's own mailbox answered, in the asks' order although the
    /// statement takes the digests sorted. Then 64 concurrent requests over 32 proofs
    /// through `first_use`: exactly one first per proof.
    #[test]
    fn claims_in_one_statement_are_each_first_once() {
        let Some((mut store, access)) =
            store_with_access("claims_in_one_statement_are_each_first_once")
        else {
            return;
        };
        store.apply(&[deposit(3, "m")]).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        assert!(
            rt.block_on(access.first_use([9; 32], 100, None))
                .unwrap()
                .first
        );
        let ask = |digest: u8, mailbox: Option<u8>| Asked {
            digest: [digest; 32],
            until: 100,
            mailbox_at: mailbox.map(|m| ([m; 32], 50)),
        };
        let asks = vec![
            ask(7, Some(3)),
            ask(8, None),
            ask(7, Some(3)),
            ask(9, Some(4)),
            ask(10, Some(4)),
            ask(2, None),
        ];
        let claims = rt.block_on(claim_all(store.pool.clone(), asks)).unwrap();
        let expect = |first, live| Claim { first, live };
        assert_eq!(
            claims,
            [
                expect(true, Some(true)),
                expect(true, None),
                expect(false, Some(true)),
                expect(false, Some(false)),
                expect(true, Some(false)),
                expect(true, None),
            ]
        );
        let firsts = rt.block_on(async {
            let tasks: Vec<_> = (0..64u8)
                .map(|i| {
                    let access = access.clone();
                    tokio::spawn(async move {
                        access
                            .first_use([100 + i % 32; 32], 100, None)
                            .await
                            .unwrap()
                            .first
                    })
                })
                .collect();
            let mut firsts = 0;
            for t in tasks {
                firsts += usize::from(t.await.unwrap());
            }
            firsts
        });
        assert_eq!(firsts, 32);
        // 65 requests' proofs went through the claimer, in at most as many statements.
        let stats = access.claim_stats();
        assert_eq!(stats.claims.load(Ordering::Relaxed), 65);
        let statements = stats.statements.load(Ordering::Relaxed);
        assert!((1..=65).contains(&statements), "{statements} statements");
    }

    /// A claim whose caller stopped waiting before the claimer took it is not
    /// recorded: the client's retry with the same proof is then first.
    #[test]
    fn a_claim_whose_caller_stopped_waiting_is_not_recorded() {
        let Some((store, access)) =
            store_with_access("a_claim_whose_caller_stopped_waiting_is_not_recorded")
        else {
            return;
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (asks, queue) = tokio::sync::mpsc::channel(8);
            let (gone, answer) = tokio::sync::oneshot::channel();
            drop(answer);
            let (waiting, claimed) = tokio::sync::oneshot::channel();
            for (digest, reply) in [(5, gone), (6, waiting)] {
                let asked = Asked {
                    digest: [digest; 32],
                    until: 100,
                    mailbox_at: None,
                };
                asks.send(ClaimAsk { asked, reply }).await.unwrap();
            }
            drop(asks);
            claimer(store.pool.clone(), queue, Arc::default()).await;
            assert!(claimed.await.unwrap().unwrap().first);
            assert!(access.first_use([5; 32], 100, None).await.unwrap().first);
            assert!(!access.first_use([6; 32], 100, None).await.unwrap().first);
        });
    }

    fn deposit(mailbox: u8, id: &str) -> Op {
        Op::Deposit(NewMessage {
            mailbox: [mailbox; 32],
            deposit_id: id.into(),
            payload: format!("payload of {id}"),
            expires_at: u64::MAX >> 2,
        })
    }

    /// `BEGIN` and `COMMIT` share round trips with the batch's statements: when one of
    /// them fails, the `COMMIT` behind it only rolls back, the batch reports the error,
    /// nothing of it is stored, and its connection (inside an aborted transaction) is
    /// never handed out again: the only pooled connection is replaced and the next
    /// batch commits.
    #[test]
    fn a_failed_statement_commits_nothing_and_its_connection_is_not_reused() {
        let Some(url) =
            database("a_failed_statement_commits_nothing_and_its_connection_is_not_reused")
        else {
            return;
        };
        let (mut store, _) = PgStore::open(&url, LIMITS, 1, || Ok("key".into())).unwrap();
        let sql = |store: &PgStore, q: &str| -> Vec<i64> {
            store.rt.block_on(async {
                let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
                let conn = tokio::spawn(conn);
                let rows = c.simple_query(q).await.unwrap();
                drop(c);
                let _ = conn.await;
                rows.iter()
                    .filter_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => {
                            r.get(0).map(|v| v.parse().unwrap())
                        }
                        _ => None,
                    })
                    .collect()
            })
        };
        // A rule of the test's: the multi-row INSERT of this batch fails on its second row.
        sql(
            &store,
            "ALTER TABLE deaddrop_messages ADD CONSTRAINT test_poison CHECK (deposit_id <> 'poison')",
        );
        let e = store
            .apply(&[deposit(1, "fine"), deposit(2, "poison")])
            .unwrap_err();
        assert!(!e.unavailable, "{e}");
        assert!(e.message.contains("test_poison"), "{e}");
        let state = "SELECT count(*) FROM deaddrop_messages UNION ALL                      SELECT count(*) FROM deaddrop_mailboxes UNION ALL                      SELECT bytes FROM deaddrop_totals UNION ALL SELECT mailboxes FROM deaddrop_totals";
        assert_eq!(sql(&store, state), [0, 0, 0, 0]);
        for id in ["after-1", "after-2"] {
            assert_eq!(
                store.apply(&[deposit(1, id)]).unwrap(),
                [Outcome::Deposited]
            );
        }
        let bytes = 2 * charge("after-1".len(), "payload of after-1".len());
        assert_eq!(sql(&store, state), [2, 1, int(bytes), 1]);
    }

    #[test]
    fn describe_never_shows_the_password() {
        let d = describe("postgres://tryst:hunter2@db.example:5433/mail");
        assert_eq!(d, "postgres host=db.example dbname=mail user=tryst");
        let d = describe("postgresql:///mail?host=/run/postgresql&password=hunter2");
        assert_eq!(d, "postgres host=/run/postgresql dbname=mail");
    }
}
