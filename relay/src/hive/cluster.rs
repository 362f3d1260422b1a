//! Hive across nodes (issue #16): publications written through to the directory, so a
//! publication made on node A is found from node C; forward mailboxes owned by one node
//! (the ownership and carrying are [`crate::cluster::http`]'s).
//!
//! Directory keys (docs/cluster.md's key table):
//!
//! | key | type | what |
//! |---|---|---|
//! | `tryst:hive:pub:<ws hex>:<device hex>` | hash `s` (publishedAt secs), `n` (nanos), `b` (the exact body), expiring with the publication | the freshest publication of the device any node accepted |
//! | `tryst:hive:ws:<ws hex>` | set of device hex, TTL at least the longest member's | the devices of a workspace |
//! | `tryst:hive:fwd:<ws hex><device hex>` | string `"<node> <epoch>"`, TTL idle eviction + poll timeout | the forward mailbox's owner |
//!
//! Nothing read from the directory is trusted: a body is verified again
//! ([`super::verify_publication`], signature, skew and TTL policy) before this node's
//! store takes it, and the store's own replacement rule and caps apply. Writes keep the
//! newest `publishedAt` ([`PUT`]); a node whose publication loses that race still
//! answered its publisher 200 (it had stored it), and serves the newer one from the
//! directory on its next read.
//!
//! Directory unreachable: publishing, reading and forwarding use the local store only
//! (counted as fallbacks); when the directory answers again, every node re-writes its
//! fresh publications (`rewrite_loop`).
//!
//! I/O contract: Redis commands, each under the directory's timeout.

use crate::cluster::http::{ClusterHttp, Family};
use std::sync::{Arc, LazyLock};

/// Writes a publication unless the stored one is at least as new. `KEYS[1]` the
/// publication hash, `KEYS[2]` the workspace set; `ARGV` = secs, nanos, body,
/// expiry (unix ms), device hex, the set's least TTL (ms). Returns 1 written, 0 kept.
pub static PUT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local s = redis.call('HGET', KEYS[1], 's')
if s then
  local n = tonumber(redis.call('HGET', KEYS[1], 'n'))
  s = tonumber(s)
  local ns, nn = tonumber(ARGV[1]), tonumber(ARGV[2])
  if s > ns or (s == ns and n >= nn) then return 0 end
end
redis.call('HSET', KEYS[1], 's', ARGV[1], 'n', ARGV[2], 'b', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[5])
local t = redis.call('PTTL', KEYS[2])
if t < tonumber(ARGV[6]) then redis.call('PEXPIRE', KEYS[2], ARGV[6]) end
return 1
",
    )
});

/// The bodies of a workspace's devices (`KEYS[1]` the set, `ARGV[1]` the publication
/// key prefix); members whose publication expired are removed from the set.
pub static WORKSPACE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local out = {}
for _, d in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local b = redis.call('HGET', ARGV[1] .. d, 'b')
  if b then table.insert(out, b) else redis.call('SREM', KEYS[1], d) end
end
return out
",
    )
});

/// The prefix of publication keys.
pub const PUB_PREFIX: &str = "tryst:hive:pub:";

/// The publication key of (workspace, device).
pub fn pub_key(ws: &[u8; 16], device: &[u8; 16]) -> String {
    format!("{PUB_PREFIX}{}:{}", hex::encode(ws), hex::encode(device))
}

/// The workspace set's key.
pub fn ws_key(ws: &[u8; 16]) -> String {
    format!("tryst:hive:ws:{}", hex::encode(ws))
}

/// The forward mailbox ownership key of (workspace, device).
pub fn forward_key(ws: &[u8; 16], device: &[u8; 16]) -> String {
    format!("tryst:hive:fwd:{}{}", hex::encode(ws), hex::encode(device))
}

/// Writes `p` through to the directory (best effort: a failure is counted and the
/// publication stays on this node; `rewrite_loop` writes it once the directory
/// answers again).
pub async fn put(c: &ClusterHttp, p: &super::VerifiedPublication, max_ttl_secs: u64) {
    let dir = c.cluster().directory();
    if !dir.connected() {
        c.count_fallback(Family::HivePublications);
        return;
    }
    let expiry_ms = u64::try_from(p.expires_at_unix)
        .unwrap_or(0)
        .saturating_mul(1000);
    // The set outlives any member: the longest TTL plus the skew window.
    let set_ttl_ms = (max_ttl_secs + 600).saturating_mul(1000);
    let mut conn = c.cluster().redis();
    let written: Option<i64> = dir
        .run(
            "hive publication",
            PUT.key(pub_key(&p.workspace, &p.device))
                .key(ws_key(&p.workspace))
                .arg(p.published_at_unix)
                .arg(p.published_at_nanos)
                .arg(p.body.as_slice())
                .arg(expiry_ms)
                .arg(hex::encode(p.device))
                .arg(set_ttl_ms)
                .invoke_async(&mut conn),
        )
        .await;
    if written.is_none() {
        c.count_fallback(Family::HivePublications);
    }
}

/// The body of (workspace, device)'s publication in the directory: `Some(None)` when
/// there is none, `None` when the directory could not answer (counted).
pub async fn get(c: &ClusterHttp, ws: &[u8; 16], device: &[u8; 16]) -> Option<Option<Vec<u8>>> {
    let dir = c.cluster().directory();
    if !dir.connected() {
        c.count_fallback(Family::HivePublications);
        return None;
    }
    let mut conn = c.cluster().redis();
    let got = dir
        .run(
            "hive publication",
            redis::cmd("HGET")
                .arg(pub_key(ws, device))
                .arg("b")
                .query_async(&mut conn),
        )
        .await;
    if got.is_none() {
        c.count_fallback(Family::HivePublications);
    }
    got
}

/// The bodies of workspace `ws`'s publications in the directory; `None` when it could
/// not answer (counted).
pub async fn workspace(c: &ClusterHttp, ws: &[u8; 16]) -> Option<Vec<Vec<u8>>> {
    let dir = c.cluster().directory();
    if !dir.connected() {
        c.count_fallback(Family::HivePublications);
        return None;
    }
    let mut conn = c.cluster().redis();
    let got = dir
        .run(
            "hive workspace",
            WORKSPACE
                .key(ws_key(ws))
                .arg(PUB_PREFIX)
                .invoke_async(&mut conn),
        )
        .await;
    if got.is_none() {
        c.count_fallback(Family::HivePublications);
    }
    got
}

/// Re-writes every fresh local publication whenever the directory answers again after
/// a failure (and at the first success): a restarted or emptied Valkey heals by itself.
pub(super) async fn rewrite_loop(hive: std::sync::Weak<super::service::Inner>) {
    let mut changes = {
        let Some(inner) = hive.upgrade() else { return };
        let Some(c) = inner.cluster() else { return };
        c.cluster().directory().reconnects()
    };
    while changes.changed().await.is_ok() {
        let Some(inner) = hive.upgrade() else { return };
        let Some(c) = inner.cluster().map(Arc::clone) else {
            return;
        };
        let max_ttl = inner.max_ttl_secs();
        let all = inner.all_fresh();
        drop(inner);
        for p in &all {
            put(&c, p, max_ttl).await;
        }
        if !all.is_empty() {
            tracing::info!(
                publications = all.len(),
                "hive: publications re-written to the directory"
            );
        }
    }
}
