//! The unsigned candidates board of Hive's live relay (`/v1/workspaces/{id}/candidates`),
//! sans-IO and bounded. Off by default (`--hive-board`); nothing here is authenticated.
//!
//! `POST` `{"device_id":"<string>","data":<any JSON>}` stores `data` for the device
//! (replacing its previous value) and answers `{"ok":true}`; `GET` answers a JSON object
//! `{"<device_id>": <data>, ...}` (sorted by device id). Entries expire
//! [`BoardLimits::ttl_secs`] after their last POST (the live relay keeps them forever; we
//! bound memory). Workspace ids and device ids: 1..=128 bytes.

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// Caps of the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardLimits {
    /// Largest POST body in bytes (413 beyond).
    pub max_body: usize,
    /// Most devices per workspace (503 beyond).
    pub max_devices: usize,
    /// Most workspaces (503 beyond).
    pub max_workspaces: usize,
    /// An entry expires this long after its last POST, seconds.
    pub ttl_secs: i64,
}

impl Default for BoardLimits {
    fn default() -> Self {
        Self {
            max_body: 16 * 1024,
            max_devices: 256,
            max_workspaces: 4096,
            ttl_secs: 600,
        }
    }
}

/// Why a board POST was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BoardError {
    /// Not `{"device_id": string, "data": any}` (400).
    #[error("invalid JSON body: {0}")]
    Json(String),
    /// device_id empty or longer than 128 bytes (400).
    #[error("device_id must be 1..=128 bytes")]
    DeviceId,
    /// The workspace or the board is full (503).
    #[error("candidates board full")]
    Full,
}

impl BoardError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Self::Full => 503,
            _ => 400,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Post {
    device_id: String,
    data: serde_json::Value,
}

/// Whether `id` is acceptable as a workspace id in the path: 1..=128 bytes of
/// `A-Za-z0-9._-`.
pub fn valid_workspace(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The board.
#[derive(Debug)]
pub struct Board {
    limits: BoardLimits,
    workspaces: HashMap<String, BTreeMap<String, (serde_json::Value, i64)>>,
}

impl Board {
    /// An empty board.
    pub fn new(limits: BoardLimits) -> Self {
        Self {
            limits,
            workspaces: HashMap::new(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &BoardLimits {
        &self.limits
    }

    fn evict(&mut self, now: i64) {
        self.workspaces.retain(|_, devices| {
            devices.retain(|_, (_, exp)| *exp > now);
            !devices.is_empty()
        });
    }

    /// Stores a POST body for workspace `ws` (already validated) at `now`.
    pub fn post(&mut self, ws: &str, body: &[u8], now: i64) -> Result<(), BoardError> {
        let post: Post =
            serde_json::from_slice(body).map_err(|e| BoardError::Json(e.to_string()))?;
        if !(1..=128).contains(&post.device_id.len()) {
            return Err(BoardError::DeviceId);
        }
        let exp = now.saturating_add(self.limits.ttl_secs);
        let known = self
            .workspaces
            .get(ws)
            .is_some_and(|d| d.contains_key(&post.device_id));
        if !known {
            let full = |b: &Self| {
                b.workspaces
                    .get(ws)
                    .map_or(b.workspaces.len() >= b.limits.max_workspaces, |d| {
                        d.len() >= b.limits.max_devices
                    })
            };
            if full(self) {
                self.evict(now);
                if full(self) {
                    return Err(BoardError::Full);
                }
            }
        }
        self.workspaces
            .entry(ws.to_owned())
            .or_default()
            .insert(post.device_id, (post.data, exp));
        Ok(())
    }

    /// The JSON object of `ws`'s unexpired entries (`{}` when none).
    pub fn get(&self, ws: &str, now: i64) -> String {
        let mut map = serde_json::Map::new();
        if let Some(devices) = self.workspaces.get(ws) {
            for (device, (data, exp)) in devices {
                if *exp > now {
                    map.insert(device.clone(), data.clone());
                }
            }
        }
        serde_json::Value::Object(map).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_and_get() {
        let mut b = Board::new(BoardLimits::default());
        assert_eq!(b.get("w", 0), "{}");
        b.post("w", br#"{"device_id":"d1","data":{"ip":"1.2.3.4"}}"#, 0)
            .unwrap();
        b.post("w", br#"{"device_id":"d0","data":[1,2]}"#, 0)
            .unwrap();
        b.post("w", br#"{"device_id":"d1","data":"new"}"#, 1)
            .unwrap();
        assert_eq!(b.get("w", 2), r#"{"d0":[1,2],"d1":"new"}"#);
        assert_eq!(b.get("w", 600), r#"{"d1":"new"}"#);
        assert_eq!(b.get("other", 0), "{}");
    }

    #[test]
    fn bad_bodies_and_caps() {
        let mut b = Board::new(BoardLimits {
            max_devices: 1,
            max_workspaces: 1,
            ..BoardLimits::default()
        });
        assert!(matches!(b.post("w", b"nope", 0), Err(BoardError::Json(_))));
        assert!(matches!(
            b.post("w", br#"{"data":1}"#, 0),
            Err(BoardError::Json(_))
        ));
        assert_eq!(
            b.post("w", br#"{"device_id":"","data":1}"#, 0),
            Err(BoardError::DeviceId)
        );
        b.post("w", br#"{"device_id":"a","data":1}"#, 0).unwrap();
        b.post("w", br#"{"device_id":"a","data":2}"#, 0).unwrap();
        assert_eq!(
            b.post("w", br#"{"device_id":"b","data":1}"#, 0),
            Err(BoardError::Full)
        );
        assert_eq!(
            b.post("v", br#"{"device_id":"b","data":1}"#, 0),
            Err(BoardError::Full)
        );
        assert_eq!(BoardError::Full.status(), 503);
        b.post("v", br#"{"device_id":"b","data":1}"#, 600).unwrap();
        assert!(valid_workspace("ws-1_a.b"));
        assert!(!valid_workspace(""));
        assert!(!valid_workspace("a/b"));
        assert!(!valid_workspace(&"a".repeat(129)));
    }
}
