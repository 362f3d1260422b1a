//! The one atomic write of private files (the secrets file, the dead-drop key, the
//! generated TLS key and certificate).
//!
//! I/O contract: writes and renames files in the target's directory; nothing else.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// A failed step of [`write_private`]: the file or directory it failed on, and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct WriteError {
    /// The temporary file, the target, or the directory.
    pub path: PathBuf,
    /// Why.
    pub source: io::Error,
}

/// Writes `contents` to `path` atomically with exactly `mode`: a fresh temporary file
/// in the same directory (never an existing one), the mode set regardless of the
/// umask, fsync of the file, rename over `path`, fsync of the directory. On error the
/// temporary file is removed and `path` is untouched (or already replaced, if only the
/// directory's fsync failed).
pub fn write_private(path: &Path, contents: &[u8], mode: u32) -> Result<(), WriteError> {
    fn at(p: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
        move |source| WriteError {
            path: p.to_owned(),
            source,
        }
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(at(&tmp))?;
        // The umask may have removed bits; make the mode exact.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(at(&tmp))?;
        f.write_all(contents).map_err(at(&tmp))?;
        f.sync_all().map_err(at(&tmp))?;
        fs::rename(&tmp, path).map_err(at(path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(at(&dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_with_the_exact_mode_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_private(&path, b"one", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(mode_of(&path), 0o600);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"two", 0o640).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(mode_of(&path), 0o640);
        assert_eq!(entries(dir.path()), ["key.pem"]);
    }

    #[test]
    fn a_failed_rename_keeps_the_old_target_and_removes_the_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory cannot be replaced by a file.
        let path = dir.path().join("taken");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), b"old").unwrap();
        let err = write_private(&path, b"new", 0o600).unwrap_err();
        assert_eq!(err.path, path);
        assert_eq!(fs::read(path.join("inside")).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["taken"]);
    }

    #[test]
    fn a_missing_directory_fails_on_the_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("key.pem");
        let err = write_private(&path, b"x", 0o600).unwrap_err();
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
        assert_eq!(err.path.parent(), path.parent());
        assert!(entries(dir.path()).is_empty());
    }
}
