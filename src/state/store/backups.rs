//! How a [`FileStore`] keeps the states it replaces: the backup of the state on record is
//! compressed ahead on a thread ([`FileStore::prepare_backup`]) and renamed into place by the
//! write that replaces it, or compressed at the write; see [`crate::state::backup`] for the
//! format.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;

use super::read::BackupReader;
use super::write::{commit, write_atomic, write_synced};
use super::{Backup, FileStore, Head, content_hash};
use crate::error::{Error, Result};
use crate::state::backup;
use crate::state::model::State;

impl FileStore {
    /// Starts compressing the backup of `current` (the state on record, as read) on a background
    /// thread, so that the [`StateStore::write`](super::StateStore::write) replacing it only has
    /// to rename a finished file.
    /// A command that holds the lock calls it once it knows the state it starts from; the write
    /// takes the prepared file only if the state file still holds the very bytes it compressed.
    /// Dropping the store (the last clone) cancels an unused one and removes its temporary file.
    /// Nothing to do for a state never written, or with [`FileStore::with_plain_backups`].
    pub fn prepare_backup(&self, env: &str, current: &State) {
        if self.plain_backups || current.lineage.is_empty() {
            return;
        }
        // One that a write left to finish goes into place first: the new one may build on it.
        self.finish_backup();
        let cancel = Arc::new(AtomicBool::new(false));
        let (path, dir, serial, lineage) =
            (self.path(env), self.backup_dir(env), current.serial, current.lineage.clone());
        let stop = Arc::clone(&cancel);
        // The text the session read, when the store kept it: the file is not read again.
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|k| k.env == env)
            .map(|k| Arc::clone(&k.text));
        let spawned = std::thread::Builder::new().name("backup".to_string()).spawn(move || {
            let read;
            let text = match &kept {
                Some(kept) => kept.as_bytes(),
                None => {
                    read = fs::read(&path).ok()?;
                    &read[..]
                }
            };
            let bytes = backup::encode_backup(&dir, serial, &lineage, text, &stop).ok()??;
            let tmp = dir.join(format!(".{}.prepared.tmp.{}", backup::file_name(serial), std::process::id()));
            write_synced(&tmp, &bytes).ok()?;
            Some(Ready { tmp, hash: content_hash(text) })
        });
        let Ok(handle) = spawned else {
            return; // no thread: the write compresses on the spot
        };
        let prepared = Prepared {
            env: env.to_string(),
            serial,
            lineage: current.lineage.clone(),
            cancel,
            handle: Some(handle),
            commit: None,
        };
        *self.prepared.lock().unwrap_or_else(PoisonError::into_inner) = Some(prepared);
    }

    /// Keeps `text`, the state file holding `current`, as the backup of its serial: a hard link
    /// with [`FileStore::with_plain_backups`]; else the file [`FileStore::prepare_backup`]
    /// compressed, if it holds these very bytes: renamed into place when it is ready, or, while
    /// it is still being made, a plain hard link now that the compressed file replaces when it
    /// is ready (at the latest when the store is dropped: the command's exit waits for it);
    /// else compressed now. Whatever the moment of a crash, the backup of the serial is whole
    /// under its name: plain, compressed, or both.
    pub(super) fn back_up(&self, env: &str, current: &Head, text: &str) -> Result<()> {
        let dir = self.backup_dir(env);
        fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        let mut slot = self.prepared.lock().unwrap_or_else(PoisonError::into_inner);
        // A prepared backup of another serial commits (or is cancelled) here.
        let prepared =
            slot.take().filter(|p| p.env == env && p.serial == current.serial && p.lineage == current.lineage);
        let plain = dir.join(backup::plain_file_name(current.serial));
        let link = || {
            let path = self.path(env);
            let _ = fs::remove_file(&plain);
            fs::hard_link(&path, &plain)
                .or_else(|_| fs::copy(&path, &plain).map(drop))
                .map_err(Error::io("back up", &path))
        };
        if self.plain_backups {
            return link();
        }
        let target = dir.join(backup::file_name(current.serial));
        // A state file put back at a serial that has a backup already (from git, say): the
        // backup stays if it holds the same text, so deltas made against it stay readable.
        let same = target.exists()
            && BackupReader::new(self, env)
                .text(&Backup { serial: current.serial, path: target.clone() })
                .is_ok_and(|kept| kept == text);
        if same {
            drop(prepared);
        } else {
            let hash = content_hash(text.as_bytes());
            match prepared {
                Some(mut p) if !p.is_finished() => {
                    link()?;
                    p.commit = Some(Commit { target, plain: plain.clone(), hash });
                    *slot = Some(p);
                    return Ok(());
                }
                Some(mut p) => match p.finish() {
                    // The directory is not synced here, to keep it off the write's path (as the
                    // hard link of plain backups never was): the file is whole once renamed.
                    Some(ready) if ready.hash == hash => commit(&ready.tmp, &target, false)?,
                    stale => {
                        if let Some(stale) = stale {
                            let _ = fs::remove_file(&stale.tmp);
                        }
                        self.compress_now(&dir, current, text, &target)?;
                    }
                },
                None => self.compress_now(&dir, current, text, &target)?,
            }
        }
        match fs::remove_file(&plain) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", &plain)(e)),
            _ => Ok(()),
        }
    }

    /// Compresses the backup of `current` on the spot and writes it atomically to `target`.
    fn compress_now(&self, dir: &Path, current: &Head, text: &str, target: &Path) -> Result<()> {
        let never = AtomicBool::new(false);
        let bytes = backup::encode_backup(dir, current.serial, &current.lineage, text.as_bytes(), &never)
            .map_err(Error::io("compress the backup", target))?
            .unwrap_or_default();
        write_atomic(target, &bytes)
    }

    /// Waits for the backup [`FileStore::prepare_backup`] started, and puts it in place if a
    /// write left it to finish (else removes it): what dropping the store does. For a caller
    /// that wants the wait at a moment of its choosing (the benchmark times it).
    pub fn finish_backup(&self) {
        drop(self.prepared.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}

/// A backup compressed ahead of the write that needs it ([`FileStore::prepare_backup`]).
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) env: String,
    pub(super) serial: u64,
    pub(super) lineage: String,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) handle: Option<JoinHandle<Option<Ready>>>,
    /// Set by a write that came before it was ready: where to put it then.
    pub(super) commit: Option<Commit>,
}

/// A prepared backup, whole and synced under a temporary name.
#[derive(Debug)]
pub(super) struct Ready {
    pub(super) tmp: PathBuf,
    /// [`content_hash`] of the state file's bytes it holds.
    pub(super) hash: u64,
}

/// Where a write left a prepared backup to go once ready.
#[derive(Debug)]
pub(super) struct Commit {
    /// `<serial>.json.zst`.
    pub(super) target: PathBuf,
    /// The plain hard link the write made meanwhile, removed once the target is in place.
    pub(super) plain: PathBuf,
    /// [`content_hash`] of the text the write backed up.
    pub(super) hash: u64,
}

impl Prepared {
    fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the thread; its file, if it made one.
    fn finish(&mut self) -> Option<Ready> {
        self.handle.take().and_then(|h| h.join().ok().flatten())
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        let pending = self.commit.take();
        if pending.is_none() {
            self.cancel.store(true, Ordering::Relaxed);
        }
        let ready = self.finish();
        let Some(pending) = pending else {
            if let Some(ready) = ready {
                let _ = fs::remove_file(&ready.tmp);
            }
            return;
        };
        // The prepared file if it holds what the write backed up, else the plain link
        // compressed now. The plain link stays if anything fails: readable either way.
        let placed = match ready {
            Some(ready) if ready.hash == pending.hash => commit(&ready.tmp, &pending.target, true).is_ok(),
            stale => {
                if let Some(stale) = stale {
                    let _ = fs::remove_file(&stale.tmp);
                }
                let dir = pending.target.parent().unwrap_or(Path::new("."));
                let never = AtomicBool::new(false);
                fs::read(&pending.plain).ok().is_some_and(|text| {
                    matches!(backup::encode_backup(dir, self.serial, &self.lineage, &text, &never),
                        Ok(Some(bytes)) if write_atomic(&pending.target, &bytes).is_ok())
                })
            }
        };
        if placed {
            let _ = fs::remove_file(&pending.plain);
        }
    }
}
