//! Writing files so that a crash never leaves one half-written: a temporary file beside the
//! target, fsync, rename, fsync of the directory; and the removal of the temporaries a killed
//! write left.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::Path;

use crate::error::{Error, Result};

/// Removes the temporary files (`.<name>.tmp.<pid>`) in `dir` whose process is gone: what a
/// write killed half-way left behind. Never a backup: those have no leading dot.
pub(super) fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((_, pid)) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp.")) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid != std::process::id() && !crate::process::process_alive(pid, None) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Renames a finished (synced) temporary file into place, and syncs the directory if `sync`.
pub(super) fn commit(tmp: &Path, target: &Path, sync: bool) -> Result<()> {
    fs::rename(tmp, target).map_err(|e| {
        let _ = fs::remove_file(tmp);
        Error::Io { action: "rename into place", path: target.to_path_buf(), source: e }
    })?;
    if sync { sync_dir(target.parent().unwrap_or(Path::new("."))) } else { Ok(()) }
}

/// Writes `bytes` to a new file at `path` and syncs it (no rename).
pub(super) fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let result = File::create(path).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Syncs a directory, so that a rename in it survives a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io("sync directory", dir))
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, fsync dir.
/// The directory is created if needed.
///
/// # Errors
/// The filesystem refuses a step (named, with the path); the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// [`write_atomic`] of what `fill` writes, through a buffer: the text need not be held whole
/// in memory first.
///
/// # Errors
/// As [`write_atomic`]; an error of `fill` is one of the write.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let file = File::create(&tmp).map_err(Error::io("create", &tmp))?;
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, file);
        fill(&mut out).map_err(Error::io("write", &tmp))?;
        let file = out.into_inner().map_err(|e| Error::io("write", &tmp)(e.into_error()))?;
        file.sync_all().map_err(Error::io("sync", &tmp))?;
        fs::rename(&tmp, path).map_err(Error::io("rename into place", path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
