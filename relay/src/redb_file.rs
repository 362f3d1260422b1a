//! The file backend of the redb databases (the dead-drop's and Qredo's stores): redb's
//! own [`FileBackend`], except that the space the file grows by is written with zeros
//! when it grows. [`create`] opens a database over it.
//!
//! redb grows its file with `ftruncate`, which leaves a hole: the first write into each
//! page then allocates a block at writeback, and a commit's `fdatasync` has to persist
//! that allocation too (on ext4 without a journal, a synchronous inode and extent write
//! after the data). A commit's pages are scattered over the file, so a growing store
//! pays this on most of them: measured here, 24 scattered 4 KiB pages took 0.78-0.85 ms
//! to `fdatasync` into a hole and 0.42-0.43 ms into blocks already written
//! (docs/performance.md, "Commits into written blocks"). PostgreSQL fills its WAL
//! segments with zeros before use for the same reason.
//!
//! Only space the file has just grown by is written, so no stored byte is ever
//! overwritten. At most [`ZERO_AHEAD`] per growth: redb grows (by doubling, then by
//! whole 4 GiB regions, and again after it trims a mostly free tail) while it holds
//! the lock its read transactions take, so the zeros are written inside a commit that
//! readers wait for; 8 MiB keeps that to a few milliseconds, and redb fills a file
//! from its start, so the first part of a growth is what the next commits use. Beyond
//! it the file stays sparse, as with redb's own backend. When the zeros cannot be
//! written (a disk too full for them), the file grows sparse as before, with a warning:
//! the commit needs only its own pages.

use redb::backends::FileBackend;
use redb::{Database, DatabaseError, StorageBackend};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

/// Opens (creating if needed) the redb database at `path` over a [`ZeroFilledFile`], as
/// `redb::Database::create` opens one over its own backend.
pub fn create(path: &Path) -> Result<Database, DatabaseError> {
    Database::builder().create_with_backend(ZeroFilledFile::open(path)?)
}

/// Most bytes written with zeros per growth of the file.
pub const ZERO_AHEAD: u64 = 8 << 20;
/// Zeros written per system call.
const CHUNK: usize = 1 << 20;

/// A redb storage backend over one file whose new space is written with zeros.
#[derive(Debug)]
pub struct ZeroFilledFile {
    /// redb's backend (it holds the file's exclusive `flock`).
    inner: FileBackend,
    /// The same open file, for the zero writes.
    file: File,
}

impl ZeroFilledFile {
    /// Opens (creating if needed) the database file at `path`, locked as redb locks it.
    pub fn open(path: &Path) -> Result<Self, DatabaseError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let dup = file.try_clone()?;
        Ok(Self {
            inner: FileBackend::new(file)?,
            file: dup,
        })
    }

    /// Writes zeros over `[from, to)`, all of it past the file's end before the call.
    fn zero_fill(&self, from: u64, to: u64) -> io::Result<()> {
        let zeros = vec![0u8; CHUNK.min((to - from) as usize)];
        let mut at = from;
        while at < to {
            let n = zeros.len().min((to - at) as usize);
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }
}

impl StorageBackend for ZeroFilledFile {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, io::Error> {
        self.inner.read(offset, len)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let old = self.inner.len()?;
        if len > old {
            let to = len.min(old.saturating_add(ZERO_AHEAD));
            if let Err(e) = self.zero_fill(old, to) {
                // Nothing of redb's lies past `old`: the zeros written so far go, and
                // the growth below is sparse, as redb's own backend makes it.
                tracing::warn!(
                    error = %e,
                    bytes = to - old,
                    "cannot write zeros into the space the database file grows by; growing it sparse"
                );
                self.inner.set_len(old)?;
            }
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self, eventual: bool) -> Result<(), io::Error> {
        self.inner.sync_data(eventual)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.inner.write(offset, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks the file system has allocated for `path` (512-byte units).
    fn blocks(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(path).unwrap().blocks()
    }

    #[test]
    fn growth_is_written_with_zeros_and_nothing_stored_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = ZeroFilledFile::open(&path).unwrap();
        f.set_len(4096).unwrap();
        f.write(0, &[7u8; 4096]).unwrap();
        f.set_len(3 * 4096 + 100).unwrap();
        assert_eq!(f.len().unwrap(), 3 * 4096 + 100);
        assert_eq!(f.read(0, 4096).unwrap(), vec![7u8; 4096]);
        assert_eq!(
            f.read(4096, 2 * 4096 + 100).unwrap(),
            vec![0u8; 2 * 4096 + 100]
        );
        // Written, not a hole: the file system holds blocks for all of it.
        assert!(blocks(&path) * 512 >= 3 * 4096, "{} blocks", blocks(&path));
        // Shrinking and growing again zero-fills only the regrown part.
        f.write(4096, &[9u8; 4096]).unwrap();
        f.set_len(2 * 4096).unwrap();
        f.set_len(4 * 4096).unwrap();
        assert_eq!(f.read(4096, 4096).unwrap(), vec![9u8; 4096]);
        assert_eq!(f.read(2 * 4096, 2 * 4096).unwrap(), vec![0u8; 2 * 4096]);
    }

    #[test]
    fn at_most_zero_ahead_is_written_per_growth() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = ZeroFilledFile::open(&path).unwrap();
        f.set_len(ZERO_AHEAD * 16).unwrap();
        assert_eq!(f.len().unwrap(), ZERO_AHEAD * 16);
        let held = blocks(&path) * 512;
        assert!(
            (ZERO_AHEAD..ZERO_AHEAD * 2).contains(&held),
            "{held} bytes allocated"
        );
    }

    #[test]
    fn a_second_open_is_refused_as_redb_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let _first = ZeroFilledFile::open(&path).unwrap();
        assert!(matches!(
            ZeroFilledFile::open(&path),
            Err(DatabaseError::DatabaseAlreadyOpen)
        ));
    }
}
